"""A death reported while the database is down is spooled in Redis, not lost, and written
once (with its item marked dead) when the database is back.

A private Postgres cluster the tests stop and start, and real Redis; no worker is needed:
`record` and `drain_spool` are what the worker and the reconciler call."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import dead_letters, runs
from pipeline.db.engine import dispose_engines
from pipeline.db.migrate import upgrade
from pipeline.db.models import RunKind
from pipeline.dead_letter_spool import SPOOLED_RAW, SPOOLED_TRACEBACK, DeadLetterSpool, decode
from tests.support.processes import PrivatePostgres, PrivateRedis
from tests.support.stack import environment


@pytest.fixture
def database(integration_env: dict[str, str]) -> Iterator[PrivatePostgres]:
    """A migrated database of the test's own, in a cluster it may stop and start."""
    cluster = PrivatePostgres()
    try:
        url = cluster.create_database("pipeline")
        upgrade(url)
        with environment({"DATABASE_URL": url}):
            yield cluster
    finally:
        dispose_engines()
        cluster.close()


def death(run_id: uuid.UUID, item_id: int, tenant: int, **changes: Any) -> dict[str, Any]:
    """A step's death as `workers.dead_letters` reports it."""
    return {
        "task_id": f"spooled-{uuid.uuid4().hex}",
        "task_name": "tasks.enrichment.crawl_site",
        "args": [{"run_id": str(run_id), "item_id": item_id, "tenant_id": tenant}],
        "kwargs": {},
        "path": "failure",
        "error_code": "CLIENT_ERROR",
        "message": "VendorClientError: the crawler refused the request",
        "traceback": "Traceback (most recent call last):\n" + "  frame\n" * 2000 + "The end",
        "attempts": 2,
        "correlation_id": "spool-test",
        **changes,
    }


def spooled_ids(spool: DeadLetterSpool) -> list[str]:
    return [decode(raw)["task_id"] for raw in spool.client.lrange(spool.key, 0, -1)]


def test_deaths_reported_while_the_database_is_down_are_spooled_then_written_once(
    database: PrivatePostgres, tenant: int
) -> None:
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, ["domain:a.example", "domain:b.example"])
    view = runs.get_run(run_id)
    assert view is not None
    first, second = view.items
    spool = DeadLetterSpool.from_settings()
    step = death(run_id, first.id, tenant)
    poison = {
        **death(run_id, second.id, tenant, path="not_an_envelope", error_code="NOT_JSON"),
        "args": [],
        "options": {"raw": base64.b64encode(b"\x80" * (SPOOLED_RAW + 10)).decode()},
    }

    database.stop()
    assert dead_letters.record(**step) is None
    assert dead_letters.record(**step) is None  # Celery reports some deaths twice
    assert dead_letters.record(**poison) is None
    assert spooled_ids(spool) == [poison["task_id"], step["task_id"], step["task_id"]]
    assert dead_letters.drain_spool() == 0, "the database is still down: nothing written"
    assert spool.size() == 3
    oldest = spool.client.lindex(spool.key, -1)

    database.start()
    assert dead_letters.drain_spool() == 3
    assert spool.size() == 0
    entries = {e.task_id: e for e in dead_letters.list_entries(limit=10)}
    assert sorted(entries) == sorted([step["task_id"], poison["task_id"]]), "one row per task"
    kept = entries[step["task_id"]]
    assert (kept.path, kept.error_code, kept.failures, kept.attempts) == (
        "failure",
        "CLIENT_ERROR",
        1,
        2,
    )
    assert (kept.tenant_id, kept.run_id, kept.item_id) == (tenant, run_id, first.id)
    assert kept.correlation_id == "spool-test" and kept.message == step["message"]
    assert kept.traceback == step["traceback"][-SPOOLED_TRACEBACK:]
    assert kept.options == {"spool_trimmed": True}
    unrunnable = entries[poison["task_id"]]
    assert (unrunnable.path, unrunnable.run_id, unrunnable.item_id) == (
        "not_an_envelope",
        None,
        None,
    )
    assert base64.b64decode(unrunnable.options["raw"]) == b"\x80" * SPOOLED_RAW

    after = runs.get_run(run_id)
    assert after is not None
    statuses = {item.id: (item.status, item.degraded_reasons) for item in after.items}
    assert statuses[first.id] == ("dead", "DEAD_LETTER:CLIENT_ERROR"), "its item is dead"
    assert statuses[second.id][0] != "dead", "a message no task can run names no item"

    # Written, but the drainer died before taking it off the spool: the next drain merges.
    spool.client.rpush(spool.key, oldest)
    assert dead_letters.drain_spool() == 1 and spool.size() == 0
    assert len(dead_letters.list_entries(limit=10)) == 2
    assert dead_letters.get_entry(kept.id).failures == 1
    assert dead_letters.drain_spool() == 0


def test_with_redis_down_too_a_death_is_logged_and_the_caller_goes_on(
    database: PrivatePostgres, tenant: int, capfd: pytest.CaptureFixture[str]
) -> None:
    spare = PrivateRedis()
    try:
        with environment({"REDIS_URL": spare.url}):
            run_id = runs.create_run(tenant, RunKind.ENRICHMENT, ["domain:c.example"])
            database.stop()
            spare.stop()
            report = death(run_id, 1, tenant)
            started = time.monotonic()
            assert dead_letters.record(**report) is None
            assert dead_letters.drain_spool() == 0
            assert time.monotonic() - started < 5, "an outage costs short timeouts, no hang"
    finally:
        spare.stop()
    lost = [line for line in capfd.readouterr().out.splitlines() if "dead_letter.lost" in line]
    assert len(lost) == 1 and report["task_id"] in lost[0]
