"""The export's tenant lease with a real worker (issue 9, item 6): a short TTL renewed by a
heartbeat, so a killed holder frees it in seconds; a holder that loses it stops writing.

A dedicated worker (one pool process, its own broker db, `LEASE_TTL_S=8`,
`TASK_TIME_LIMIT_S=300`) exports to the simulator's ERP made slow, so the export is caught
mid-way:

- its pool process is SIGKILLed while it holds the lease: the redelivered export finds the
  lease busy, waits, and takes it within about `LEASE_TTL_S` — not `TASK_TIME_LIMIT_S`, the
  old lease's life — then finishes with every partner in the ERP once;
- another holder takes the lease from under it: it notices, writes nothing more while the
  other holds it, and finishes once the lease is free again.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pipeline import runs
from pipeline.db.models import RunKind
from pipeline.settings import load_settings
from pipeline.simulator import Simulator
from tests.support.erp import enriched
from tests.support.processes import Worker, wait_until
from tests.support.runs import finished
from tests.support.stack import own_redis_url
from workers.app import create_app

pytestmark = pytest.mark.usefixtures("worker")
EXPORT_BROKER = own_redis_url(1)
LEASE_TTL_S = 8.0  # longer than Celery takes to see the dead process and redeliver, busy
COMPANIES = 10
LATENCY_MS = 250  # each partner: a search and a create


@pytest.fixture(scope="module")
def export_worker(
    integration_env: dict[str, str], tmp_path_factory: Any
) -> Iterator[tuple[Worker, Any]]:
    app = create_app(load_settings(broker_url=EXPORT_BROKER, result_backend=EXPORT_BROKER))
    env = {
        **integration_env,
        "BROKER_URL": EXPORT_BROKER,
        "RESULT_BACKEND": EXPORT_BROKER,
        "LEASE_TTL_S": str(LEASE_TTL_S),
        "TASK_TIME_LIMIT_S": "300",
    }
    log_path = tmp_path_factory.mktemp("export-lease") / "worker.log"
    proc = Worker(env, log_path, concurrency=1, name="export-lease")
    try:
        proc.wait_ready(app)
        yield proc, app
    finally:
        proc.stop()
        redis.Redis.from_url(EXPORT_BROKER).flushdb()


@pytest.fixture
def state(integration_env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(integration_env["REDIS_URL"])
    yield client
    client.close()


def lease_key(integration_env: dict[str, str], tenant: int) -> str:
    return f"{integration_env['REDIS_KEY_PREFIX']}:lease:{{{tenant}}}:erp"


def export_run_for(tenant: int, source: runs.RunView) -> uuid.UUID:
    """The export run `enqueue_export` would create for `source`, not yet sent."""
    return runs.create_run(
        tenant,
        RunKind.EXPORT,
        [item.item_key for item in source.items],
        correlation_id=uuid.uuid4().hex,
        parent_run_id=source.run.id,
        options={"then": []},
    )


def assert_each_partner_once(simulator: Simulator, tenant: int, view: runs.RunView) -> None:
    assert [i.status for i in view.items] == ["succeeded"] * COMPANIES, [
        (i.item_key, i.status, i.degraded_reasons) for i in view.items
    ]
    refs = [p["ref"] for p in simulator.erp_partners(tenant)]
    assert sorted(refs) == sorted(
        f"pipeline:{tenant}:{i.item_key.split(':')[1]}" for i in view.items
    ), "every partner in the ERP, none twice"


def erp_calls(simulator: Simulator, tenant: int) -> int:
    return int(simulator.stats()["calls"]["erp"].get(str(tenant), 0))


def started_writing(simulator: Simulator, tenant: int) -> int | None:
    return len(simulator.erp_partners(tenant)) or None


def test_a_killed_holders_lease_is_taken_within_its_ttl_and_no_partner_is_written_twice(
    integration_env: dict[str, str],
    simulator: Simulator,
    tenant: int,
    export_worker: tuple[Worker, Any],
    state: redis.Redis,
) -> None:
    proc, app = export_worker
    source = enriched(simulator, tenant, n=COMPANIES)
    run_id = export_run_for(tenant, source)
    key = lease_key(integration_env, tenant)
    (child,) = proc.children()
    simulator.set_fault(vendor="erp", tenant=tenant, latency_ms=LATENCY_MS)
    try:
        app.send_task("tasks.export.export_run", args=[str(run_id)])
        wait_until(lambda: started_writing(simulator, tenant), interval=0.01, what="a partner")
        dead_holder, left_ms = state.get(key), state.pttl(key)
        assert dead_holder, "the export holds the tenant's lease while it writes"
        os.kill(child, signal.SIGKILL)
        killed = time.monotonic()
        assert len(simulator.erp_partners(tenant)) < COMPANIES, "killed before it finished"

        taken_by = wait_until(
            lambda: (token := state.get(key)) not in (None, dead_holder) and token,
            timeout=60,
            interval=0.01,
            what="the redelivered export to take the lease",
        )
        waited = time.monotonic() - killed
        view = finished(run_id, timeout=90)
    finally:
        simulator.set_fault(vendor="erp", tenant=tenant)

    print(
        f"\nthe redelivered export took the lease {waited:.2f}s after the kill "
        f"(the dead holder's had {left_ms / 1000:.2f}s left; LEASE_TTL_S={LEASE_TTL_S})"
    )
    log = proc.log_text()
    assert "WorkerLostError" in log or "SIGKILL" in log, "the pool process did die"
    assert taken_by != dead_holder
    assert "export.waits_for_lease" in log, "the dead holder's lease held it back meanwhile"
    assert waited < LEASE_TTL_S + LEASE_TTL_S / 3 + 3.0, (
        f"waited {waited:.1f}s: about LEASE_TTL_S ({LEASE_TTL_S}s), not TASK_TIME_LIMIT_S (300s)"
    )
    assert_each_partner_once(simulator, tenant, view)
    # two logins, a search and a create per partner, and the one partner in flight redone
    assert erp_calls(simulator, tenant) <= 2 + 2 * (COMPANIES + 1)


def test_an_export_that_loses_its_lease_stops_writing_until_it_has_it_again(
    integration_env: dict[str, str],
    simulator: Simulator,
    tenant: int,
    export_worker: tuple[Worker, Any],
    state: redis.Redis,
) -> None:
    proc, app = export_worker
    source = enriched(simulator, tenant, n=COMPANIES)
    run_id = export_run_for(tenant, source)
    key = lease_key(integration_env, tenant)
    simulator.set_fault(vendor="erp", tenant=tenant, latency_ms=LATENCY_MS)
    try:
        app.send_task("tasks.export.export_run", args=[str(run_id)])
        wait_until(lambda: started_writing(simulator, tenant), interval=0.01, what="a partner")
        # Another holder now has the tenant's lease (as if ours had lapsed and been taken).
        assert state.set(key, "another-holder", px=60_000, xx=True)
        lost_at = wait_until(
            lambda: proc.log_text().find("export.lease_lost") + 1,
            timeout=30,
            interval=0.02,
            what="the export to notice its lease is gone",
        )
        written = len(simulator.erp_partners(tenant))
        assert written < COMPANIES, "it stopped before the last partner"
        wait_until(
            lambda: proc.log_text()[lost_at:].count("export.waits_for_lease") >= 3,
            timeout=30,
            interval=0.05,
            what="the export to come back and find the lease busy, three times",
        )
        assert len(simulator.erp_partners(tenant)) == written, "nothing written meanwhile"
        assert runs.get_run(run_id).run.status == "running"  # type: ignore[union-attr]

        state.delete(key)  # the other holder is done
        view = finished(run_id, timeout=60)
    finally:
        simulator.set_fault(vendor="erp", tenant=tenant)

    assert_each_partner_once(simulator, tenant, view)
    assert erp_calls(simulator, tenant) <= 2 + 2 * COMPANIES, "no partner written twice"
