"""`/breakers` through the real app against the real Redis breakers and `breaker_events`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipeline.api_keys import create_api_key
from pipeline.breakers import breaker_for
from pipeline.db.breaker_events import breaker_events
from pipeline.settings import get_settings
from pipeline.vendors.registry import GUARDED_VENDORS
from tests.support.api import assert_error
from tests.support.breakers import fail, trip


def test_a_tenant_sees_each_vendors_breaker_with_state_failures_and_times(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    trip(tenant, "crawler")
    fail(tenant, "search")

    listed = api.get("/breakers", headers=tenant_headers).json()["breakers"]
    by_vendor = {b["vendor"]: b for b in listed}
    assert list(by_vendor) == list(GUARDED_VENDORS)
    assert {b["tenant_id"] for b in listed} == {tenant}
    crawler = by_vendor["crawler"]
    assert crawler["state"] == "open" and crawler["failures"] == get_settings().cb_error_threshold
    opened = datetime.fromisoformat(crawler["opened_at"])
    cool_off = timedelta(seconds=get_settings().cb_cool_off_s)
    assert datetime.fromisoformat(crawler["next_probe_at"]) - opened == cool_off
    assert by_vendor["search"] == {
        "tenant_id": tenant,
        "vendor": "search",
        "state": "closed",
        "failures": 1,
        "opened_at": None,
        "next_probe_at": None,
    }
    same = api.get(f"/breakers?tenant={tenant}", headers=tenant_headers).json()["breakers"]
    assert same == listed


def test_open_and_reset_force_the_breaker_and_record_the_transitions(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    opened = api.post(f"/breakers/{tenant}/crm/open", headers=tenant_headers)
    assert opened.status_code == 200, opened.text
    assert opened.json()["state"] == "open" and opened.json()["next_probe_at"]
    assert breaker_for(tenant, "crm").current_state == "open"

    reset = api.post(f"/breakers/{tenant}/crm/reset", headers=tenant_headers).json()
    assert (reset["state"], reset["failures"], reset["opened_at"]) == ("closed", 0, None)
    assert breaker_for(tenant, "crm").current_state == "closed"
    moves = [(e.from_state, e.to_state) for e in breaker_events(tenant, "crm")]
    assert moves == [("closed", "open"), ("open", "closed")]


def test_another_tenants_breakers_are_404_and_an_admin_sees_all(
    api: Any, tenant_headers: dict[str, str], admin_headers: dict[str, str], tenant: int
) -> None:
    other = tenant + 1
    trip(other, "zerobounce")
    for response in (
        api.get(f"/breakers?tenant={other}", headers=tenant_headers),
        api.post(f"/breakers/{other}/zerobounce/reset", headers=tenant_headers),
        api.post(f"/breakers/{other}/crawler/open", headers=tenant_headers),
    ):
        assert_error(response, 404, "NOT_FOUND")
    assert breaker_for(other, "zerobounce").current_state == "open", "left as it was"
    assert breaker_for(other, "crawler").current_state == "closed"

    open_now = api.get("/breakers?state=open", headers=admin_headers).json()["breakers"]
    assert {"tenant_id": other, "vendor": "zerobounce"}.items() <= next(
        b for b in open_now if b["tenant_id"] == other
    ).items()
    assert {b["state"] for b in open_now} == {"open"}
    theirs = api.get(f"/breakers?tenant={other}", headers=admin_headers).json()["breakers"]
    assert len(theirs) == len(GUARDED_VENDORS)
    reset = api.post(f"/breakers/{other}/zerobounce/reset", headers=admin_headers)
    assert reset.json()["state"] == "closed"


def test_bad_breaker_requests(api: Any, tenant_headers: dict[str, str], tenant: int) -> None:
    error = assert_error(
        api.post(f"/breakers/{tenant}/fax/open", headers=tenant_headers), 404, "NOT_FOUND"
    )
    assert "crawler" in error["message"], "says which vendors have breakers"
    error = assert_error(
        api.post("/breakers/0/crm/open", headers=tenant_headers), 422, "INVALID_INPUT"
    )
    assert error["details"]["errors"][0]["field"] == "path.tenant"
    error = assert_error(
        api.get("/breakers?state=broken", headers=tenant_headers), 422, "INVALID_INPUT"
    )
    assert error["details"]["errors"][0]["field"] == "query.state"
    assert_error(api.get("/breakers"), 401, "UNAUTHORIZED")
    key, _ = create_api_key(tenant_id=tenant)
    assert_error(
        api.post(f"/breakers/{tenant}/crm/open", headers={"X-API-Key": key + "x"}),
        401,
        "UNAUTHORIZED",
    )
