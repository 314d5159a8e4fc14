"""The enrichment fallback rules, read against the spec without a worker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.enrichment_rules import (
    annotate,
    contact_vendor,
    crawl_fell_short,
    item_status,
    reasons_for,
    search_query,
    wants_search,
)
from pipeline.errors import CircuitOpenError, VendorServerError, VendorTimeoutError

FLAGS = {
    "enable_tavily_fallback": True,
    "enable_apify_linkedin": True,
    "enable_lusha_fallback": False,
}


def ctx(**changes: Any) -> dict[str, Any]:
    base = {
        "company": {"id": 1, "name": "Acme", "domain": "acme.com"},
        "options": dict(FLAGS),
        "reasons": [],
    }
    options = changes.pop("options", {})
    base["options"].update(options)
    return {**base, **changes}


@pytest.mark.parametrize(
    ("vendor", "reason"),
    [
        ("crawler", "CRAWL_ERROR"),
        ("search", "TAVILY_FAIL"),
        ("apify_linkedin", "APIFY_LINKEDIN_FAIL"),
        ("lusha", "LUSHA_FAIL"),
        ("zerobounce", "ZEROBOUNCE_DEFER"),
    ],
)
def test_each_vendors_final_failure_earns_its_reason(vendor: str, reason: str) -> None:
    assert reasons_for(VendorServerError("x", vendor=vendor)) == [reason]
    assert reasons_for(VendorTimeoutError("x", vendor=vendor)) == [reason]


def test_an_open_contact_breaker_is_named_instead_of_the_failure() -> None:
    assert reasons_for(CircuitOpenError("open", vendor="lusha")) == ["CIRCUIT_OPEN:lusha"]


@pytest.mark.parametrize(
    ("vendor", "reason"), [("zerobounce", "ZEROBOUNCE_DEFER"), ("crawler", "CRAWL_ERROR")]
)
def test_elsewhere_an_open_breaker_keeps_the_steps_own_reason(vendor: str, reason: str) -> None:
    assert reasons_for(CircuitOpenError("open", vendor=vendor)) == [
        reason,
        f"CIRCUIT_OPEN:{vendor}",
    ]


def test_annotate_adds_each_reason_once_and_can_stop() -> None:
    once = annotate(ctx(), "CRAWL_THIN")
    assert annotate(once, "CRAWL_THIN")["reasons"] == ["CRAWL_THIN"]
    assert annotate(once, "DATA_EMPTY:no_domain_name", stop=True)["stop"] is True
    assert ctx()["reasons"] == [], "annotate never mutates its input"


@pytest.mark.parametrize(
    ("reasons", "flag", "expected"),
    [
        ([], True, False),
        (["CRAWL_THIN"], True, True),
        (["CRAWL_ERROR"], True, True),
        (["CIRCUIT_OPEN:crawler"], True, True),
        (["CRAWL_SKIPPED:no_domain"], True, True),
        (["CRAWL_THIN"], False, False),
    ],
)
def test_search_runs_only_when_the_crawl_fell_short_and_the_flag_is_on(
    reasons: list[str], flag: bool, expected: bool
) -> None:
    context = ctx(reasons=reasons, options={"enable_tavily_fallback": flag})
    assert wants_search(context) is expected
    assert crawl_fell_short(context) is bool(reasons)


def test_search_query_uses_what_is_known() -> None:
    assert search_query(ctx()) == "Acme acme.com"
    assert search_query(ctx(company={"id": None, "name": "Acme", "domain": None})) == "Acme"


def test_primary_contact_vendor_follows_the_apify_flag() -> None:
    assert contact_vendor(ctx(), "primary") == "apify_linkedin"
    assert contact_vendor(ctx(options={"enable_apify_linkedin": False}), "primary") == "lusha"


def test_no_contact_lookup_when_the_company_has_contacts_or_no_domain() -> None:
    assert contact_vendor(ctx(had_contacts=True), "primary") is None
    assert contact_vendor(ctx(company={"id": 1, "name": "A", "domain": None}), "primary") is None
    assert contact_vendor(ctx(stop=True), "primary") is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"contacts": None}, None),  # fallback off by default
        ({"contacts": None, "options": {"enable_lusha_fallback": True}}, "lusha"),
        ({"contacts": [], "options": {"enable_lusha_fallback": True}}, None),  # primary answered
        (
            {
                "contacts": None,
                "options": {"enable_lusha_fallback": True, "enable_apify_linkedin": False},
            },
            None,  # Lusha was the primary: no second try of the same vendor
        ),
    ],
)
def test_lusha_fallback_only_after_the_primary_left_no_contacts(
    changes: dict[str, Any], expected: str | None
) -> None:
    context = ctx(**changes)
    if context["contacts"] is None:
        del context["contacts"]
    assert contact_vendor(context, "fallback") == expected


def test_item_status_rules() -> None:
    assert item_status(ctx()) == "succeeded"
    assert item_status(ctx(reasons=["CRAWL_THIN"])) == "degraded"
    assert item_status(ctx(reasons=["DATA_EMPTY:no_domain_name"])) == "failed"
