"""`pipeline runs show` on runs whose items healed, wait for vendors or were re-driven.

The healing itself lives elsewhere; here its traces — `healed_at`, `history`, `redrives`,
`deferrals` rows — are written straight into a real Postgres, and the command is run as a
user runs it (a subprocess), so what it prints is what it reads from there.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from pipeline import runs
from pipeline.db.engine import session_scope
from pipeline.db.models import Deferral, DeferralStatus, ItemStatus, RunItem, RunKind
from tests.integration.test_cli import pipeline

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = "s3cr3t-Zq9"  # what must never be shown, wherever it hides in a stored event


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(minutes: float, name: str, **fields: Any) -> dict[str, Any]:
    return {"at": at(minutes).isoformat(), "event": name, **fields}


def healed_history(healed_min: float, vendor: str = "lusha") -> list[dict[str, Any]]:
    """What healing writes: the heal started (with the reasons before it), then healed."""
    return [
        event(
            healed_min - 1,
            "healing",
            status="degraded",
            reasons=f"CIRCUIT_OPEN:{vendor}",
            vendors=[vendor],
        ),
        event(healed_min, "healed", vendors=[vendor]),
    ]


REDRIVEN_HISTORY = [
    event(1, "redriven", why="lease", step="crawl_site"),
    event(2, "redriven", why="redis_reset", step="find_contacts:primary"),
]


@dataclass(frozen=True)
class SeededRun:
    run_id: uuid.UUID
    tenant: int
    items: dict[str, int]  # item key → id


def seeded_run(tenant: int, outcomes: dict[str, tuple[ItemStatus, list[str]]]) -> SeededRun:
    """A run whose items finished as given (key → status, reasons), through `pipeline.runs`."""
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, outcomes)
    ids = runs.item_ids(run_id)
    for key, (status, reasons) in outcomes.items():
        runs.finish_item(ids[key], status, reasons)
    return SeededRun(run_id, tenant, ids)


def write_item(item_id: int, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.id == item_id).values(**values))


def defer(
    run: SeededRun,
    key: str,
    vendor: str,
    reason: str,
    status: DeferralStatus,
    *,
    attempts: int = 0,
    next_try_min: float = 10,
    healed_min: float | None = None,
) -> None:
    with session_scope() as session:
        session.add(
            Deferral(
                tenant_id=run.tenant,
                vendor=vendor,
                kind=RunKind.ENRICHMENT,
                run_id=run.run_id,
                item_id=run.items[key],
                reason=reason,
                status=status,
                attempts=attempts,
                next_try_at=at(next_try_min),
                created_at=T0,
                healed_at=at(healed_min) if healed_min is not None else None,
            )
        )


def aftercare_run(tenant: int) -> SeededRun:
    """Four items: one healed (it was degraded by an open lusha breaker), one waiting for
    zerobounce (and given up on lusha), one being healed, one re-driven twice."""
    ok, degraded = ItemStatus.SUCCEEDED, ItemStatus.DEGRADED
    run = seeded_run(
        tenant,
        {
            "company:healed": (ok, []),
            "company:waiting": (degraded, ["ZEROBOUNCE_DEFER", "CIRCUIT_OPEN:lusha"]),
            "company:healing": (degraded, ["CIRCUIT_OPEN:crawler"]),
            "company:redriven": (ok, []),
        },
    )
    write_item(run.items["company:healed"], healed_at=at(5), history=healed_history(5))
    defer(run, "company:healed", "lusha", "CIRCUIT_OPEN:lusha", DeferralStatus.HEALED, attempts=1)
    defer(
        run, "company:waiting", "zerobounce", "ZEROBOUNCE_DEFER", DeferralStatus.WAITING, attempts=2
    )
    defer(run, "company:waiting", "lusha", "CIRCUIT_OPEN:lusha", DeferralStatus.EXPIRED, attempts=5)
    defer(
        run,
        "company:healing",
        "crawler",
        "CIRCUIT_OPEN:crawler",
        DeferralStatus.HEALING,
        attempts=1,
        next_try_min=12,
    )
    write_item(
        run.items["company:redriven"],
        redrives=2,
        history=REDRIVEN_HISTORY,
        step="record_item",
        progress_at=at(3),
    )
    return run


def with_secrets(run: SeededRun) -> None:
    """Give an item events and a deferral that carry a secret in every way they could:
    keys no event should have, free text in a name, a reason, a vendor."""
    key = "company:waiting"
    write_item(
        run.items[key],
        history=[
            {
                **event(6, "healed", vendors=["lusha", f"key={SECRET}"]),
                "token": SECRET,
                "message": f"https://user:{SECRET}@crm.example/oauth",
                "checkpoint": {"api_key": SECRET},
            },
            event(7, "redriven", why=f"Bearer {SECRET}", step="crawl_site"),
            event(8, "reopened", status="failed", reasons=f"CRM_REJECTED:bad,password {SECRET}"),
        ],
    )
    defer(run, key, "crm", f"CRM said: client secret {SECRET} refused", DeferralStatus.WAITING)


def show(run_id: uuid.UUID) -> str:
    """`pipeline runs show` as a user runs it, in a wide terminal (rows never wrap)."""
    result = pipeline("runs", "show", str(run_id), env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def line_with(text: str, *needles: str) -> str:
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(found) == 1, f"one line with {needles}, got {found}:\n{text}"
    return found[0]


@pytest.mark.usefixtures("integration_env")
def test_runs_show_says_what_healed_when_and_what_it_was(tenant: int) -> None:
    run = aftercare_run(tenant)
    out = show(run.run_id)

    assert "healed: 1 item, last at 2026-12-01 09:05:00 UTC" in out
    assert "deferred: 1 waiting, 1 healing, 1 healed, 1 expired\n" in out
    assert "still open: crawler 1, zerobounce 1; next try 2026-12-01 09:10:00 UTC" in out
    assert "re-driven: 1 item, 2 times" in out

    healed = line_with(out, "company:healed", "2026-12-01 09:05:00")
    assert "degraded: CIRCUIT_OPEN:lusha" in healed and "lusha" in healed
    assert "succeeded" in healed
    redriven = line_with(out, "company:redriven", "redis_reset")
    assert "find_contacts:primary" in redriven and "2026-12-01 09:02:00" in redriven
    assert " 2 " in redriven
    waiting = line_with(out, "company:waiting", "ZEROBOUNCE_DEFER")
    assert waiting.rstrip(" │").endswith("zerobounce"), "the items table says what it waits for"
    assert "│ degraded " in line_with(out, "company:healing", "│ crawler")
    line_with(out, "company:healed", "succeeded healed")  # the items table marks it healed


@pytest.mark.usefixtures("integration_env")
def test_runs_show_prints_no_secret_an_event_or_deferral_carries(tenant: int) -> None:
    run = aftercare_run(tenant)
    with_secrets(run)
    out = show(run.run_id)
    assert SECRET not in out
    assert "still open: crawler 1, crm 1, zerobounce 1" in out


@pytest.mark.usefixtures("integration_env")
def test_a_run_of_200_items_shows_20_of_each_and_counts_the_rest(tenant: int) -> None:
    """30 healed, 25 re-driven: the summary counts them all; each table shows 20 (the
    latest heals first) and says how many more there are."""
    keys = [f"company:{n:03d}" for n in range(200)]
    run = seeded_run(tenant, {key: (ItemStatus.SUCCEEDED, []) for key in keys})
    for n, key in enumerate(keys[:30]):
        write_item(run.items[key], healed_at=at(10 + n), history=healed_history(10 + n))
    for key in keys[100:125]:
        write_item(run.items[key], redrives=1, history=REDRIVEN_HISTORY[1:])

    out = show(run.run_id)
    assert "healed: 30 items, last at 2026-12-01 09:39:00 UTC" in out
    assert "re-driven: 25 items, 25 times" in out
    assert sum("degraded: CIRCUIT_OPEN:lusha" in line for line in out.splitlines()) == 20
    assert sum("redis_reset" in line for line in out.splitlines()) == 20
    assert "... and 10 more healed items" in out
    assert "... and 5 more re-driven items" in out
    assert "degraded: CIRCUIT_OPEN:lusha" in line_with(out, "company:029", "09:39:00")
    assert not any("company:000" in line and "CIRCUIT_OPEN" in line for line in out.splitlines())
    assert len(out.splitlines()) < 200 + 2 * 20 + 40, "one line per item, the rest summaries"
