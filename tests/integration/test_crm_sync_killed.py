"""CRM sync survives a worker process SIGKILLed mid-batch (issue 4, items 3 and 6).

A dedicated worker (batches of 5, its own broker db) syncs ~30 contacts to a slow CRM; the
pool process running the sync is killed with SIGKILL while some but not all contacts are
written. The late-acked message is re-queued (`task_reject_on_worker_lost`), the sync runs
again in a fresh pool process, and:

- every item ends `succeeded` and every contact is in the CRM exactly once;
- the re-run re-sent only what was unfinished: the CRM saw at most one batch of repeated
  idempotency keys (the batch in flight when the process died).
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import pytest
import redis

from pipeline import enqueue_enrichment, runs
from pipeline.companies import contact_ids_of_companies
from pipeline.credentials import put_credential
from pipeline.db.models import RunKind
from pipeline.settings import load_settings
from pipeline.simulator import Simulator
from tests.support.processes import Worker, wait_until
from tests.support.runs import company, finished
from tests.support.stack import own_redis_url
from workers.app import create_app

pytestmark = pytest.mark.usefixtures("worker")
BATCH = 5
COMPANIES = 12
LATENCY_MS = 400
SYNC_BROKER = own_redis_url(1)


def duplicates(simulator: Simulator, tenant: int) -> int:
    return int(simulator.stats()["duplicate_idempotency_keys"].get(str(tenant), 0))


def sync_run_for(tenant: int, source: runs.RunView) -> uuid.UUID:
    """The CRM sync run `enqueue_crm_sync` would create for `source`, not yet sent."""
    company_ids = [int(item.item_key.split(":")[1]) for item in source.items]
    keys = [f"contact:{cid}" for cid in contact_ids_of_companies(tenant, company_ids)]
    return runs.create_run(
        tenant,
        RunKind.CRM_SYNC,
        keys,
        correlation_id=source.run.correlation_id or uuid.uuid4().hex,
        parent_run_id=source.run.id,
        options={"then": []},
    )


def test_a_worker_killed_mid_batch_writes_every_record_exactly_once(
    integration_env: dict[str, str], simulator: Simulator, tenant: int, tmp_path: Any
) -> None:
    """SIGKILL of the pool process mid-sync: redelivered, finished, no duplicate record,
    at most the in-flight batch re-sent."""
    simulator.register_crm_client(tenant, f"client-{tenant}", "crm-secret")
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": "crm-secret"})
    source = finished(enqueue_enrichment(tenant, [company(i, tenant) for i in range(COMPANIES)]))
    assert source.run.status in {"succeeded", "degraded"}
    run_id = sync_run_for(tenant, source)
    total = len(runs.get_run(run_id).items)  # type: ignore[union-attr]
    assert total > 3 * BATCH, f"enough contacts for several batches, got {total}"

    app = create_app(load_settings(broker_url=SYNC_BROKER, result_backend=SYNC_BROKER))
    env = {
        **integration_env,
        "BROKER_URL": SYNC_BROKER,
        "RESULT_BACKEND": SYNC_BROKER,
        "CRM_BATCH_SIZE": str(BATCH),
    }
    sync_worker = Worker(env, tmp_path / "sync-worker.log", concurrency=1, name="crm-killed")
    try:
        sync_worker.wait_ready(app)
        (child,) = sync_worker.children()
        simulator.set_fault(vendor="crm", tenant=tenant, latency_ms=LATENCY_MS)
        app.send_task("tasks.crm_sync.sync_run", args=[str(run_id)])

        written_before_kill = wait_until(
            lambda: len(simulator.crm_contacts(tenant)) or None,
            timeout=30,
            interval=0.01,
            what="the first batch to reach the CRM",
        )
        os.kill(child, signal.SIGKILL)
        assert written_before_kill < total, "killed before the sync could finish"

        view = finished(run_id, timeout=90)
        log = sync_worker.log_text()
        assert "WorkerLostError" in log or "SIGKILL" in log, "the pool process did die"
        assert child not in sync_worker.children(), "the sync went on in a new process"

        assert [i.status for i in view.items] == ["succeeded"] * total, [
            (i.item_key, i.status, i.degraded_reasons) for i in view.items
        ]
        assert view.run.status == "succeeded"
        written = simulator.crm_contacts(tenant)
        assert len(written) == total, "every contact written"
        assert len({c["external_id"] for c in written}) == total, "each exactly once"
        assert 0 <= duplicates(simulator, tenant) <= BATCH, (
            f"{duplicates(simulator, tenant)} repeated idempotency keys: the re-run re-sent "
            "more than the batch in flight"
        )
    finally:
        simulator.set_fault(vendor="crm", tenant=tenant)
        sync_worker.stop()
        redis.Redis.from_url(SYNC_BROKER).flushdb()
