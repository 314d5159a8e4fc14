"""Enrichment end to end: real worker processes, Redis, Postgres and the vendor simulator.

Every branch of the fallback chain and every reason code, the run status rules, tenant
isolation, and that no item is ever lost.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from pipeline import enqueue_enrichment, runs
from pipeline.breakers import breaker_for
from pipeline.companies import contacts_of
from pipeline.db.engine import session_scope
from pipeline.db.models import (
    FINISHED_ITEM_STATUSES,
    Company,
    RunKind,
    VendorCall,
)
from pipeline.errors import InputError
from pipeline.simulator import Simulator
from tests.support.runs import calls, company, finished, reasons

pytestmark = pytest.mark.usefixtures("worker")


def test_a_healthy_run_succeeds_with_verified_contacts(simulator: Simulator, tenant: int) -> None:
    run_id = enqueue_enrichment(tenant, [company(n, tenant) for n in range(3)])
    view = finished(run_id)

    assert view.run.status == "succeeded" and not view.run.degraded
    assert [i.status for i in view.items] == ["succeeded"] * 3
    assert (view.run.items_total, view.run.items_succeeded) == (3, 3)
    company_id = int(view.items[0].item_key.split(":")[1])
    found = contacts_of(company_id)
    assert found and all(c.email_status in {"valid", "invalid", "catch-all"} for c in found)
    assert calls(simulator, "search", tenant) == 0, "no fallback when the crawl was good"
    stats = view.run.vendor_stats
    assert {"crawler", "apify_linkedin", "zerobounce"} <= set(stats)
    assert (
        stats["crawler"]["calls"] == 3 and stats["crawler"]["p95_ms"] >= stats["crawler"]["p50_ms"]
    )


def test_a_company_with_neither_name_nor_domain_fails_its_item_only(tenant: int) -> None:
    view = finished(enqueue_enrichment(tenant, [company(1, tenant), {"name": " ", "domain": ""}]))
    assert [i.status for i in view.items] == ["succeeded", "failed"]
    assert reasons(view)[1] == ["DATA_EMPTY:no_domain_name"]
    assert view.run.status == "degraded"


def test_a_run_where_no_item_can_be_processed_fails(tenant: int) -> None:
    view = finished(enqueue_enrichment(tenant, [{}, {"name": ""}]))
    assert view.run.status == "failed"
    assert view.run.items_failed == 2


def test_a_thin_crawl_falls_back_to_web_search(simulator: Simulator, tenant: int) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, thin=True)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["CRAWL_THIN"]]
    assert calls(simulator, "search", tenant) == 1
    assert view.run.status == "degraded"


def test_a_failed_crawl_and_a_failed_search_are_both_written_down(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, status=503)
    simulator.set_fault(vendor="search", tenant=tenant, status=500)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["CRAWL_ERROR", "TAVILY_FAIL"]]
    assert calls(simulator, "crawler", tenant) == 3, "retried up to RETRY_MAX_ATTEMPTS"
    assert view.items[0].status == "degraded", "the chain went on to contacts and emails"
    assert calls(simulator, "zerobounce", tenant) == 1


def test_search_fallback_can_be_switched_off(simulator: Simulator, tenant: int) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, thin=True)
    options = {"enable_tavily_fallback": False}
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)], options=options))
    assert reasons(view) == [["CRAWL_THIN"]]
    assert calls(simulator, "search", tenant) == 0


def test_a_failing_primary_contact_vendor_is_written_down(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="apify_linkedin", tenant=tenant, status=503, times=3)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["APIFY_LINKEDIN_FAIL"]]
    assert calls(simulator, "lusha", tenant) == 0, "ENABLE_LUSHA_FALLBACK is off by default"


def test_lusha_is_the_fallback_when_enabled(simulator: Simulator, tenant: int) -> None:
    simulator.set_fault(vendor="apify_linkedin", tenant=tenant, status=503, times=3)
    options = {"enable_lusha_fallback": True}
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)], options=options))
    assert reasons(view) == [["APIFY_LINKEDIN_FAIL"]]
    assert calls(simulator, "lusha", tenant) == 1
    company_id = int(view.items[0].item_key.split(":")[1])
    assert {c.source for c in contacts_of(company_id)} == {"lusha"}


def test_lusha_is_primary_when_apify_is_off_and_its_failure_is_named(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="lusha", tenant=tenant, status=502)
    options = {"enable_apify_linkedin": False, "enable_lusha_fallback": True}
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)], options=options))
    assert reasons(view) == [["LUSHA_FAIL"]]
    assert calls(simulator, "apify_linkedin", tenant) == 0


def test_an_open_breaker_is_recorded_and_costs_no_call(simulator: Simulator, tenant: int) -> None:
    breaker_for(tenant, "apify_linkedin").open()
    options = {"enable_lusha_fallback": True}
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)], options=options))
    assert reasons(view) == [["CIRCUIT_OPEN:apify_linkedin"]]
    assert calls(simulator, "apify_linkedin", tenant) == 0
    assert calls(simulator, "lusha", tenant) == 1, "an open primary also takes the fallback"


def test_deferred_email_verification_marks_emails_unknown(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="zerobounce", tenant=tenant, status=503)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["ZEROBOUNCE_DEFER"]]
    company_id = int(view.items[0].item_key.split(":")[1])
    assert {c.email_status for c in contacts_of(company_id)} == {"unknown"}


def test_companies_that_already_have_contacts_are_not_looked_up_again(
    simulator: Simulator, tenant: int
) -> None:
    finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    before = calls(simulator, "apify_linkedin", tenant)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert view.run.status == "succeeded"
    assert calls(simulator, "apify_linkedin", tenant) == before


def test_a_hanging_vendor_is_cut_off_by_the_read_timeout_and_retried(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, hang_s=3, times=1)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert view.run.status == "succeeded"
    assert calls(simulator, "crawler", tenant) == 2
    assert (view.items[0].attempts, view.items[0].last_error_code) == (2, "TIMEOUT")
    assert view.run.vendor_stats["crawler"]["errors"] == 1


def test_a_rate_limit_is_waited_out_and_not_counted_by_the_breaker(
    simulator: Simulator, tenant: int
) -> None:
    """Four 429s (more than CB_ERROR_THRESHOLD) across two companies: had the breaker
    counted them it would have opened; instead the items wait, and pacing keeps the
    crawler's 429s a Retry-After apart, but for calls already in flight. (That every item
    then gets through needs paced steps to pause without spending attempts: see
    test_rate_limited_runs.py.)"""
    simulator.set_fault(vendor="crawler", tenant=tenant, status=429, retry_after=1, times=4)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant), company(2, tenant)]))
    assert view.run.status in {"succeeded", "degraded"}
    assert calls(simulator, "crawler", tenant) <= 6
    assert breaker_for(tenant, "crawler").current_state == "closed"
    assert breaker_for(tenant, "crawler").fail_counter == 0
    assert not any("CIRCUIT_OPEN" in r for item in reasons(view) for r in item)
    with session_scope() as session:
        refused = session.scalars(
            select(VendorCall.at).where(
                VendorCall.run_id == view.run.id, VendorCall.error_code == "RATE_LIMITED"
            )
        ).all()
    # at most the two calls in flight at once (two worker processes) within any second
    times = sorted(refused)
    spans = [(b - a).total_seconds() for a, b in zip(times, times[2:], strict=False)]
    assert len(refused) >= 2 and all(span >= 1.0 for span in spans), spans


def test_no_item_is_lost_even_when_every_vendor_fails(simulator: Simulator, tenant: int) -> None:
    for vendor in ("crawler", "search", "apify_linkedin", "lusha", "zerobounce"):
        simulator.set_fault(vendor=vendor, tenant=tenant, status=503)
    submitted = [company(n, tenant) for n in range(8)] + [{}]
    view = finished(enqueue_enrichment(tenant, submitted, options={"enable_lusha_fallback": True}))
    terminal = [i for i in view.items if i.status in FINISHED_ITEM_STATUSES]
    assert len(terminal) == len(submitted)
    assert view.run.status == "degraded"
    assert all(r for r in reasons(view))
    seen = {reason for item in reasons(view) for reason in item}
    assert "CIRCUIT_OPEN:apify_linkedin" in seen, "the breaker spared the vendor"


def test_two_tenants_are_isolated(simulator: Simulator, tenant: int) -> None:
    other = tenant + 1
    simulator.set_fault(vendor="apify_linkedin", tenant=tenant, status=503)
    runs_of = {t: enqueue_enrichment(t, [company(n, t) for n in range(6)]) for t in (tenant, other)}
    failing, healthy = finished(runs_of[tenant]), finished(runs_of[other])
    assert any("CIRCUIT_OPEN:apify_linkedin" in r for r in reasons(failing))
    assert healthy.run.status == "succeeded"
    assert not any(r for r in reasons(healthy))
    assert breaker_for(other, "apify_linkedin").current_state == "closed"


@pytest.mark.parametrize(
    ("tenant_id", "companies", "message"),
    [
        ("7", [{"name": "A"}], "tenant must be a positive integer"),
        (7, [], "no companies given"),
        (7, [{"name": "A", "website": "a.com"}], "website"),
        (7, [{"domain": "not a domain"}], "not a domain"),
        (7, [10**12], "no company of tenant 7 has the id given as company #1"),
        (7, [{"domain": "a.com"}, {"domain": "A.com"}], "repeats company #1"),
        (7, [{"name": "x" * 300}], "at most 255"),
        (2**63, [{"name": "A"}], "tenant must be a positive integer"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    tenant_id: Any, companies: list[Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        enqueue_enrichment(tenant_id, companies)


def test_companies_can_be_given_by_id(tenant: int) -> None:
    first = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    company_id = int(first.items[0].item_key.split(":")[1])
    again = finished(enqueue_enrichment(tenant, [company_id]))
    assert again.items[0].item_key == f"company:{company_id}"
    assert again.items[0].status == "succeeded"


def test_an_unreadable_answer_is_a_bad_response_not_a_lost_item(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, garbage=True)
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["CRAWL_ERROR"]], "the search fallback then served the item"
    assert calls(simulator, "crawler", tenant) == 1, "a bad answer is not retried"
    assert calls(simulator, "search", tenant) == 1
    assert view.items[0].status == "degraded"


def test_an_open_verification_breaker_still_defers_the_emails(tenant: int) -> None:
    breaker_for(tenant, "zerobounce").open()
    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    assert reasons(view) == [["ZEROBOUNCE_DEFER", "CIRCUIT_OPEN:zerobounce"]]
    company_id = int(view.items[0].item_key.split(":")[1])
    assert {c.email_status for c in contacts_of(company_id)} == {"unknown"}


def test_a_repeated_record_step_writes_nothing_twice(tenant: int) -> None:
    from tasks.enrichment import record_item

    view = finished(enqueue_enrichment(tenant, [company(1, tenant)]))
    item, company_id = view.items[0], int(view.items[0].item_key.split(":")[1])
    with session_scope() as session:
        before = session.query(VendorCall).filter_by(run_id=view.run.id).count()
        length = session.get_one(Company, company_id).site_text_length
    redelivered = {
        "run_id": str(view.run.id),
        "item_id": item.id,
        "tenant_id": tenant,
        "company": {"id": company_id, "name": "x", "domain": "x.com"},
        "options": view.run.options,
        "reasons": ["CRAWL_THIN"],
        "calls": [
            {
                "run_id": str(view.run.id),
                "tenant_id": tenant,
                "vendor": "crawler",
                "ok": True,
                "latency_ms": 1.0,
            }
        ],
    }
    assert record_item(redelivered)["status"] == "already-recorded"
    again = runs.get_run(view.run.id)
    assert again is not None and again.items[0].degraded_reasons == ""
    with session_scope() as session:
        assert session.query(VendorCall).filter_by(run_id=view.run.id).count() == before
        assert session.get_one(Company, company_id).site_text_length == length


def test_a_step_that_fails_unexpectedly_records_its_item_dead_and_the_run_finishes(
    celery_app: Any, tenant: int
) -> None:
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, ["company:999999999"], options={})
    item_id = runs.item_ids(run_id)["company:999999999"]
    runs.mark_running(run_id)
    ctx = {
        "run_id": str(run_id),
        "item_id": item_id,
        "tenant_id": tenant,
        "company": {"id": 999999999, "name": "Ghost", "domain": "ghost.example"},
        "options": {},
        "reasons": [],
        "contacts": [{"name": "A", "title": "B", "email": "a@ghost.example", "source": "lusha"}],
    }
    celery_app.send_task("tasks.enrichment.record_item", args=[ctx])  # FK violation inside
    view = finished(run_id)
    assert view.items[0].status == "dead"
    assert view.items[0].degraded_reasons.startswith("STEP_ERROR:")
    assert view.run.items_dead == 1 and view.run.status == "failed"
