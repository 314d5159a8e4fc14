"""`pipeline runs list|show` and run ids: filters an operator needs (stuck, degraded),
full ids in the output, unique prefixes accepted, and clear refusals otherwise."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from pipeline.db.engine import session_scope
from pipeline.db.models import Run, RunItem, RunKind, RunStatus, utcnow
from pipeline.runs import create_run
from pipeline.settings import get_settings
from tests.support.cli import pipeline
from tests.support.runs import delete_runs_of

pytestmark = pytest.mark.usefixtures("integration_env", "forget_runs")


@pytest.fixture
def forget_runs(tenant: int) -> Iterator[None]:
    """These runs' items are open and never sent: gone after the test, so no reconciler
    pass in a later test finds them to re-drive."""
    yield
    delete_runs_of(tenant, tenant + 1)


def listed(*args: str) -> list[dict[str, Any]]:
    result = pipeline("runs", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def make_run(tenant: int, status: RunStatus) -> uuid.UUID:
    """A run in `status` with two items (never sent: no worker will touch it)."""
    made = create_run(tenant, RunKind.ENRICHMENT, ["input:1", "input:2"])
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == made).values(status=status))
    return made


def run_with_id(tenant: int, run_id: uuid.UUID) -> None:
    with session_scope() as session:
        session.add(Run(id=run_id, tenant_id=tenant, kind=RunKind.ENRICHMENT, status="degraded"))


def backdate_items(run_id: uuid.UUID, seconds: float) -> None:
    with session_scope() as session:
        session.execute(
            update(RunItem)
            .where(RunItem.run_id == run_id)
            .values(progress_at=utcnow() - timedelta(seconds=seconds))
        )


def test_runs_list_filters_by_tenant_status_kind_and_finds_stuck_runs(tenant: int) -> None:
    lease = get_settings().lease_s(RunKind.ENRICHMENT)
    moving = make_run(tenant, RunStatus.RUNNING)
    stuck = make_run(tenant, RunStatus.RUNNING)
    backdate_items(stuck, lease + 60)
    degraded = make_run(tenant, RunStatus.DEGRADED)
    make_run(tenant + 1, RunStatus.DEGRADED)

    everything = listed("--tenant", str(tenant))
    assert [row["id"] for row in everything] == [str(degraded), str(stuck), str(moving)]
    assert {row["tenant_id"] for row in everything} == {tenant}

    found = listed("--tenant", str(tenant), "--stuck")
    assert [row["id"] for row in found] == [str(stuck)]
    assert (found[0]["stuck"], found[0]["overdue_items"]) == (True, 2)

    assert [r["id"] for r in listed("--tenant", str(tenant), "--status", "degraded")] == [
        str(degraded)
    ]
    both = listed("--tenant", str(tenant), "--status", "degraded", "--status", "running")
    assert len(both) == 3
    assert listed("--tenant", str(tenant), "--kind", "export") == []
    assert len(listed("--tenant", str(tenant), "--limit", "1")) == 1
    assert len(listed("--tenant", str(tenant), "--since", "1h")) == 3
    assert listed("--tenant", str(tenant), "--since", "2999-01-01") == []

    table = pipeline("runs", "list", "--tenant", str(tenant), env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    for run_id in (moving, stuck, degraded):
        assert str(run_id) in table.stdout  # full ids, never cut
    assert "2 items, unmoved since" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "stuck"], "Invalid value for '--status'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--since", "yesterday"], "expected an age like 2h or 7d"),
        (["--tenant", "0"], "tenant must be a positive integer"),
    ],
)
def test_runs_list_refuses_bad_filters_in_one_line(args: list[str], message: str) -> None:
    result = pipeline("runs", "list", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_is_refused(tenant: int) -> None:
    twin_a = uuid.UUID(f"{tenant:08x}"[-8:] + "-0000-4000-8000-00000000000a")
    twin_b = uuid.UUID(f"{tenant:08x}"[-8:] + "-0000-4000-8000-00000000000b")
    for run_id in (twin_a, twin_b):
        run_with_id(tenant, run_id)
    single = make_run(tenant, RunStatus.SUCCEEDED)

    shown = pipeline("runs", "show", str(twin_a))
    assert shown.returncode == 0 and f"run {twin_a}" in shown.stdout
    no_hyphens = pipeline("runs", "show", twin_b.hex.upper())
    assert no_hyphens.returncode == 0 and f"run {twin_b}" in no_hyphens.stdout
    by_prefix = pipeline("runs", "show", str(single)[:13])
    assert by_prefix.returncode == 0 and f"run {single}" in by_prefix.stdout

    ambiguous = pipeline("runs", "show", str(twin_a)[:12])
    assert ambiguous.returncode == 2
    assert "matches several runs" in ambiguous.stderr
    assert str(twin_a) in ambiguous.stderr and str(twin_b) in ambiguous.stderr

    listed_dlq = pipeline("dlq", "list", "--run", str(twin_a)[:12])
    assert listed_dlq.returncode == 2 and "matches several runs" in listed_dlq.stderr


@pytest.mark.parametrize("typed", ["x" * 100_000, "not-a-uuid", "abc\x01def"])
def test_a_bad_run_id_is_refused_without_echoing_it(typed: str) -> None:
    result = pipeline("runs", "show", typed)
    assert result.returncode == 2
    assert "not a run id" in result.stderr
    assert len(result.stderr) < 300 and typed not in result.stderr
