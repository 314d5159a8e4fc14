"""CRM sync end to end: real worker, Redis (tokens, rate), Postgres and the simulator's CRM."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import enqueue_crm_sync, enqueue_enrichment
from pipeline.companies import contact_ids_of_companies
from pipeline.credentials import put_credential
from pipeline.simulator import Simulator
from tests.integration.test_enrichment import company, finished, reasons

pytestmark = pytest.mark.usefixtures("worker")
SECRET = "crm-secret-value"


def enriched(simulator: Simulator, tenant: int, n: int = 3) -> Any:
    simulator.register_crm_client(tenant, f"client-{tenant}", SECRET)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": SECRET})
    return finished(enqueue_enrichment(tenant, [company(i, tenant) for i in range(n)]))


def external_ids(tenant: int, source: Any) -> list[str]:
    companies = [int(i.item_key.split(":")[1]) for i in source.items]
    return [f"pipeline:{tenant}:{cid}" for cid in contact_ids_of_companies(tenant, companies)]


def test_every_contact_is_written_once_even_when_synced_again(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded" and sync.run.parent_run_id == source.run.id
    written = simulator.crm_contacts(tenant)
    assert len(written) == len(sync.items) == len(external_ids(tenant, source)) > 0
    assert simulator.stats()["duplicate_idempotency_keys"].get(str(tenant), 0) == 0

    again = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert again.run.status == "succeeded"
    assert len(simulator.crm_contacts(tenant)) == len(written), "no duplicate records"


def test_a_partly_failed_batch_is_recovered_record_by_record(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    rejected = external_ids(tenant, source)[:2]
    simulator.set_fault(vendor="crm", tenant=tenant, reject_records=rejected, batch_only=True)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded"
    recovered = [i for i in sync.items if i.last_error_code == "BATCH_REJECTED"]
    assert sorted(f"pipeline:{tenant}:{i.item_key.split(':')[1]}" for i in recovered) == sorted(
        rejected
    )
    assert len(simulator.crm_contacts(tenant)) == len(sync.items)


def test_records_the_crm_keeps_refusing_are_marked_and_the_rest_written(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    everyone = external_ids(tenant, source)
    simulator.set_fault(vendor="crm", tenant=tenant, reject_records=everyone[:1])
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    failed = [i for i in sync.items if i.status == "failed"]
    assert [r for i in failed for r in i.degraded_reasons.split(",")] == [
        "CRM_REJECTED:CLIENT_ERROR"
    ]
    assert sync.run.status == "degraded"
    assert len(simulator.crm_contacts(tenant)) == len(everyone) - 1


def test_refused_credentials_stop_the_sync_with_auth_required(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": "wrong"})
    view = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert view.run.status == "failed"
    assert {r for item in reasons(view) for r in item} == {"AUTH_REQUIRED"}
    assert simulator.crm_contacts(tenant) == []
