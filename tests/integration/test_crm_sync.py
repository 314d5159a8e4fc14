"""CRM sync end to end: real worker, Redis (tokens, rate), Postgres and the simulator's CRM."""

from __future__ import annotations

import pytest

from pipeline import enqueue_crm_sync
from pipeline.credentials import get_credential, put_credential
from pipeline.settings import get_settings
from pipeline.simulator import Simulator
from tests.support.crm import SECRET, crm_calls, enriched, external_ids
from tests.support.runs import finished, reasons

pytestmark = pytest.mark.usefixtures("worker")


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


def test_a_crm_that_fails_for_a_while_is_retried_later_and_every_record_lands_once(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    simulator.set_fault(vendor="crm", tenant=tenant, status=503, times=2)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded", reasons(sync)
    assert len(simulator.crm_contacts(tenant)) == len(sync.items)
    assert simulator.stats()["duplicate_idempotency_keys"].get(str(tenant), 0) == 0
    codes = [c.error_code for c in crm_calls(sync.run.id)]
    assert codes[:2] == ["SERVER_ERROR", "SERVER_ERROR"] and codes[2:] == [None] * len(codes[2:])


def test_a_crm_that_stays_down_stops_the_sync_after_the_retry_budget(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    simulator.set_fault(vendor="crm", tenant=tenant, status=503)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "failed"
    assert {r for item in reasons(sync) for r in item} == {"CRM_UNAVAILABLE:RETRIES_EXHAUSTED"}
    attempts = get_settings().retry_max_attempts
    assert len(crm_calls(sync.run.id)) == attempts, "one batch call per attempt, no storm"


def test_retry_after_from_the_crm_is_waited_out_by_the_task_not_failed(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    simulator.set_fault(vendor="crm", tenant=tenant, status=429, retry_after=1.5, times=1)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded", reasons(sync)
    refused, *written = crm_calls(sync.run.id)
    assert refused.error_code == "RATE_LIMITED" and written and written[0].ok
    assert (written[0].at - refused.at).total_seconds() >= 1.5


def test_an_oauth_invalid_client_answer_stops_the_sync_as_auth_required(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    put_credential(tenant, "crm", {"client_id": "nobody-knows-me", "client_secret": SECRET})
    view = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert {r for item in reasons(view) for r in item} == {"AUTH_REQUIRED"}
    assert get_credential(tenant, "crm").needs_attention
