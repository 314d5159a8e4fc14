"""The command line as a user meets it: real subprocesses, real worker, clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.cli import csv_file, pipeline


@pytest.mark.usefixtures("integration_env")
@pytest.mark.parametrize(
    ("content", "tenant", "message"),
    [
        ("name,website\nAcme,acme.com\n", "7", "unknown columns website"),
        ("", "7", "the file is empty"),
        ("name,domain\n", "7", "no companies"),
        ("id,name\nabc,Acme\n", "7", "id must be an integer"),
        ("name,domain\nAcme,acme.com\n", "seven", "tenant must be a positive integer"),
    ],
    ids=["unknown-column", "empty-file", "header-only", "bad-id", "bad-tenant"],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path, content: str, tenant: str, message: str
) -> None:
    result = pipeline("enrich", "--tenant", tenant, "--file", str(csv_file(tmp_path, content)))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.usefixtures("integration_env")
def test_a_missing_file_is_named(tmp_path: Path) -> None:
    result = pipeline("enrich", "--tenant", "7", "--file", str(tmp_path / "nope.csv"))
    assert (result.returncode, "cannot read" in result.stderr) == (2, True)


@pytest.mark.usefixtures("worker")
def test_enrich_waits_and_shows_each_item_with_its_reason(tmp_path: Path, tenant: int) -> None:
    path = csv_file(tmp_path, f"name,domain\nAcme,acme-{tenant}.com\n,\n")
    result = pipeline("enrich", "--tenant", str(tenant), "--file", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    assert "degraded" in result.stdout
    assert "DATA_EMPTY:no_domain_name" in result.stdout
    run_id = result.stdout.split("enqueued run ")[1].split()[0]

    shown = pipeline("runs", "show", run_id)
    assert shown.returncode == 0
    assert "DATA_EMPTY:no_domain_name" in shown.stdout and "succeeded" in shown.stdout


@pytest.mark.usefixtures("integration_env")
@pytest.mark.parametrize(
    ("run_id", "message"), [("not-a-uuid", "not a run id"), ("0" * 32, "no run")]
)
def test_runs_show_names_a_bad_or_unknown_run(run_id: str, message: str) -> None:
    result = pipeline("runs", "show", run_id)
    assert result.returncode == 2 and message in result.stderr


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """No broker, database or Redis configured; temporary files under `tmp_path/tmp`."""
    (tmp_path / "tmp").mkdir()
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"BROKER_URL", "DATABASE_URL", "REDIS_URL", "RESULT_BACKEND"}
        },
        "TMPDIR": str(tmp_path / "tmp"),
    }


def test_the_demo_runs_embedded_with_nothing_configured(tmp_path: Path) -> None:
    """`pipeline demo --then crm_sync,export` with no broker, database or Redis configured:
    in-process everything, CRM tokens and rate limits included; its temporary folder
    (SQLite database, logs) is gone afterwards."""
    result = pipeline(
        "demo", "--companies", "30", "--then", "crm_sync,export",
        env=embedded_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "mode: embedded" in result.stdout
    assert "CIRCUIT_OPEN:apify_linkedin" in result.stdout
    assert "tenant B: no CIRCUIT_OPEN" in result.stdout
    for label in ("A", "B"):  # the three stages of each tenant's pipeline, all finished
        for stage in ("crm_sync", "export"):
            assert re.search(rf"│ {label} → {stage}\s+│ succeeded", result.stdout), result.stdout
            assert re.search(rf"{label} \(\d+\) {stage}: [0-9a-f-]{{36}}\n", result.stdout)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_demo_cleans_up_when_it_fails_too(tmp_path: Path) -> None:
    result = pipeline("demo", "--companies", "5", "--timeout", "0.01",
                      env=embedded_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the demo timed out" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
