"""Writes whose answer was lost: the vendor applied them and answered after our read timeout.

A hang with no status in the simulator is a slow success (the write is done, the answer
comes after HTTP_READ_TIMEOUT_S = 1 s here). Such a record must never be marked failed, and
never written twice: the CRM is asked which idempotency keys it applied, the ERP whether a
partner with our ref exists, before anything else happens to it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline import enqueue_crm_sync, enqueue_export
from pipeline.errors import VendorConnectionError, VendorTimeoutError
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.simulator import Simulator
from pipeline.vendors.erp import ErpClient
from tasks.export import export_one, partner_vals
from tests.support.crm import enriched as enriched_for_crm
from tests.support.crm import external_ids
from tests.support.erp import enriched as enriched_for_erp
from tests.support.processes import free_port
from tests.support.runs import calls, finished, reasons

pytestmark = pytest.mark.usefixtures("worker")
HANG_S = 2.0  # beyond the tests' HTTP_READ_TIMEOUT_S (1 s): answered after we gave up


def duplicates(simulator: Simulator, tenant: int) -> int:
    return int(simulator.stats()["duplicate_idempotency_keys"].get(str(tenant), 0))


def test_a_batch_whose_answer_was_lost_is_confirmed_not_failed_and_not_sent_again(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched_for_crm(simulator, tenant, n=4)
    # the token request goes through; the first batch is written but answered too late
    simulator.set_fault(vendor="crm", tenant=tenant, hang_s=HANG_S, skip=1, times=1)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded", reasons(sync)
    assert {i.status for i in sync.items} == {"succeeded"}
    assert (
        len(simulator.crm_contacts(tenant)) == len(sync.items) == len(external_ids(tenant, source))
    )
    assert duplicates(simulator, tenant) == 0, "confirmed by a lookup, not sent again"
    assert calls(simulator, "crm", tenant) == 3, "token, the hung batch, one lookup"


def test_when_the_lookup_is_lost_too_the_batch_is_retried_under_the_same_keys(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched_for_crm(simulator, tenant, n=4)
    simulator.set_fault(vendor="crm", tenant=tenant, hang_s=HANG_S, skip=1, times=2)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "succeeded", reasons(sync)
    assert len(simulator.crm_contacts(tenant)) == len(sync.items)
    assert duplicates(simulator, tenant) == len(sync.items), "re-sent once, answered from memory"


# A tenant of its own, so that the simulator's seeded draws (per vendor and tenant) — and
# with them which calls hang — are the same in every run of this test. With this one (and
# the session simulator's seed 7): the first batch hangs and is confirmed, the second
# hangs and so does its lookup, so it is sent again (answered from the CRM's memory).
HUNG_TENANT = 3_000_000_213


def test_hung_crm_answers_never_leave_a_written_record_failed_nor_a_duplicate(
    simulator: Simulator,
) -> None:
    """The tester's case: a CRM that often answers after the read timeout, lookups too."""
    tenant = HUNG_TENANT
    source = enriched_for_crm(simulator, tenant, n=40)
    simulator.set_fault(vendor="crm", tenant=tenant, hang_s=1.5, error_rate=0.5, skip=1)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id), timeout=180)
    held = {c["external_id"] for c in simulator.crm_contacts(tenant)}
    failed = {
        f"pipeline:{tenant}:{i.item_key.split(':')[1]}" for i in sync.items if i.status == "failed"
    }
    assert not failed & held, "a record the CRM holds is never marked failed"
    assert len(simulator.crm_contacts(tenant)) == len(held), "no duplicate contacts"
    assert sync.run.status == "succeeded", reasons(sync)
    assert held == set(external_ids(tenant, source))
    assert int(simulator.stats()["errors"]["crm"][str(tenant)]) >= 3, "answers were lost"
    assert 0 < duplicates(simulator, tenant) < len(held), "one batch sent twice, no more"


def erp_client(simulator: Simulator, tenant: int, url: str = "") -> ErpClient:
    simulator.register_erp_user(tenant, f"odoo_{tenant}", "admin", "s3cret-erp")
    return ErpClient(
        url=url or f"{simulator.url}/erp/xmlrpc/2",
        db=f"odoo_{tenant}",
        login="admin",
        password="s3cret-erp",
        tenant_id=tenant,
        timeout=get_settings().http_read_timeout_s,
    )


def test_an_erp_create_that_timed_out_but_was_applied_is_not_failed_nor_duplicated(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched_for_erp(simulator, tenant, n=1)
    # authenticate and the search by ref go through; the create is done but answered late
    simulator.set_fault(vendor="erp", tenant=tenant, hang_s=HANG_S, skip=2, times=1)
    view = finished(enqueue_export(tenant, run_id=source.run.id))
    assert view.run.status == "succeeded", reasons(view)
    assert len(simulator.erp_partners(tenant)) == 1
    assert calls(simulator, "erp", tenant) == 4, "authenticate, search, create, one lookup"


def test_with_no_retry_left_a_created_partner_whose_answer_was_lost_is_still_written(
    simulator: Simulator, tenant: int
) -> None:
    """In-process, one attempt only: without the lookup the record would fail."""
    client = erp_client(simulator, tenant)
    client.authenticate()
    simulator.set_fault(vendor="erp", tenant=tenant, hang_s=HANG_S, skip=1, times=1)
    company: Any = type("Company", (), {"id": 1, "name": "Acme", "domain": "acme.example"})
    single_try = RetryPolicy(
        max_attempts=1, base_delay_ms=1, max_delay_ms=1, retry_after_cap_s=1, rng=random.Random(1)
    )
    assert export_one(client, single_try, partner_vals(tenant, company, []), set()) == []
    assert [p["ref"] for p in simulator.erp_partners(tenant)] == [f"pipeline:{tenant}:1"]


def test_the_erp_client_tells_a_request_never_sent_from_an_answer_lost(
    simulator: Simulator, tenant: int
) -> None:
    with pytest.raises(VendorConnectionError) as refused:
        erp_client(simulator, tenant, url=f"http://127.0.0.1:{free_port()}/xmlrpc/2").authenticate()
    assert not refused.value.maybe_applied
    client = erp_client(simulator, tenant)
    client.authenticate()
    simulator.set_fault(vendor="erp", tenant=tenant, hang_s=HANG_S, times=1)
    with pytest.raises(VendorTimeoutError) as lost:
        client.create_partner({"name": "Acme", "ref": "x"})
    assert lost.value.maybe_applied
