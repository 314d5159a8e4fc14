"""`pipeline runs show` on runs whose items healed, wait for vendors or were re-driven.

The healing itself lives elsewhere; here its traces — `healed_at`, `history`, `redrives`,
`deferrals` rows — are written straight into a real Postgres, and the command is run as a
user runs it (a subprocess), so what it prints is what it reads from there.
"""

from __future__ import annotations

import os
import uuid

import pytest

from pipeline.db.models import ItemStatus
from tests.support.cli import pipeline
from tests.support.seeded_runs import (
    REDRIVEN_HISTORY,
    SECRET,
    aftercare_run,
    at,
    healed_history,
    seeded_run,
    with_secrets,
    write_item,
)


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
