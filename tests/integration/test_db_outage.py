"""Our own database going away (issue 9, item 2): no task is acked as done while its
outcome cannot be written. Tasks ride the outage out on the retry policy's outage curve,
spending no attempt, and the run finishes as if nothing had happened.

A private Postgres cluster (initdb, its own port) is stopped under a running worker; the
machine's own Postgres is never touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

from pipeline import runs
from pipeline.db.migrate import upgrade
from pipeline.settings import load_settings
from pipeline.simulator import Simulator
from tests.support.processes import PrivatePostgres, Worker, wait_until
from tests.support.runs import unsent_run
from tests.support.stack import environment, own_redis_url
from workers.app import create_app

BROKER = own_redis_url(1)
OUTAGE_S = 4.0
OUTAGE_ENV = {
    "DB_RETRY_BASE_DELAY_MS": "200",
    "DB_RETRY_MAX_DELAY_MS": "1000",
    "DB_OUTAGE_MAX_S": "120",
}


@pytest.fixture
def private_db(integration_env: dict[str, str]) -> Iterator[tuple[PrivatePostgres, dict[str, str]]]:
    cluster = PrivatePostgres()
    try:
        url = cluster.create_database("outage")
        upgrade(url)
        env = {**integration_env, **OUTAGE_ENV, "DATABASE_URL": url}
        env |= {"BROKER_URL": BROKER, "RESULT_BACKEND": BROKER}
        with environment(env):
            yield cluster, env
    finally:
        cluster.close()
        redis.Redis.from_url(BROKER).flushdb()


def outage_ridden_s(worker: Worker) -> float:
    """For how long the worker has logged retries for the database being away (retries
    that spend no attempt): the first to the last, in seconds."""
    seen = []
    for line in worker.log_text().splitlines():
        if '"task.retry"' in line:
            event = json.loads(line)
            if event.get("error_code") == "OperationalError" and event.get("attempt") is None:
                seen.append(datetime.fromisoformat(event["timestamp"]))
    return (max(seen) - min(seen)).total_seconds() if seen else 0.0


def test_a_postgres_outage_mid_run_loses_nothing(
    private_db: tuple[PrivatePostgres, dict[str, str]],
    simulator: Simulator,
    tenant: int,
    tmp_path: Any,
) -> None:
    cluster, env = private_db
    app = create_app(load_settings())
    worker = Worker(env, tmp_path / "worker.log", concurrency=2, name="outage")
    n = 16
    try:
        worker.wait_ready(app)
        simulator.set_fault(vendor="crawler", tenant=tenant, latency_ms=150)
        run_id, _ = unsent_run(tenant, n)  # in the private database
        app.send_task("tasks.enrichment.start_run", args=[str(run_id)])
        wait_until(lambda: runs.progress(run_id)[0] >= 2, timeout=60, what="the run under way")

        cluster.stop()  # every write and every step's progress mark now fails
        # Longer than the vendor retry policy lasts (3 attempts, well under a second),
        # which is what gave up on the database before.
        wait_until(
            lambda: outage_ridden_s(worker) >= OUTAGE_S,
            timeout=60,
            what=f"tasks to ride {OUTAGE_S} s of outage out",
        )
        cluster.start()

        view = wait_until(
            lambda: (v := runs.get_run(run_id)) and v.run.finished_at and v,
            timeout=120,
            what="the run to finish",
        )
        assert [(i.status, i.degraded_reasons) for i in view.items] == [("succeeded", "")] * n
        assert view.run.status == "succeeded"
        assert "dead_letter" not in worker.log_text(), "nothing was dead-lettered"
    finally:
        simulator.set_fault(vendor="crawler", tenant=tenant)
        if not cluster.running():
            cluster.start()
        worker.stop()
