"""The one guarded path for vendor calls, on in-memory breakers (pure: no Redis, no HTTP)."""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from pipeline.breakers import BreakerFactory
from pipeline.errors import (
    BulkheadFullError,
    CircuitOpenError,
    VendorClientError,
    VendorConnectionError,
    VendorRateLimitError,
    VendorServerError,
    classify,
)
from pipeline.resilience.guard import VendorGuard
from pipeline.settings import load_settings

SECRET = "sk-live-SECRET123"


def http_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response.request = requests.Request("GET", f"http://v/x?api_key={SECRET}").prepare()
    return requests.HTTPError(f"{status} for url http://v/x?api_key={SECRET}", response=response)


def test_raise_for_status_errors_are_judged_by_their_response() -> None:
    assert isinstance(classify(http_error(429, {"Retry-After": "3"}), "crm"), VendorRateLimitError)
    assert isinstance(classify(http_error(400), "crm"), VendorClientError)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **call: Any) -> None:
        self.calls.append(call)


def guard(
    recorder: Recorder, slots: Any = None, breakers: BreakerFactory | None = None
) -> VendorGuard:
    breakers = breakers or BreakerFactory(None, load_settings(), sinks=())
    return VendorGuard(breakers=breakers, slots=slots, record=recorder)


def test_a_requests_error_arrives_classified_with_no_secret_anywhere_in_its_chain() -> None:
    recorder = Recorder()

    def call() -> None:
        raise requests.ConnectionError(f"Max retries exceeded with url: /x?api_key={SECRET}")

    with pytest.raises(VendorConnectionError) as caught:
        guard(recorder).call(1, "crawler", call)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    rendered = "".join(traceback.format_exception(caught.value))
    assert SECRET not in rendered
    assert [c["error_code"] for c in recorder.calls] == ["CONNECTION_FAILED"]


def test_calls_that_reach_the_vendor_are_recorded_and_refusals_are_not() -> None:
    recorder = Recorder()
    vendor_guard = guard(recorder)
    assert vendor_guard.call(7, "lusha", lambda: "ok") == "ok"

    def server_error() -> None:
        raise http_error(503)

    for _ in range(3):
        with pytest.raises(VendorServerError):
            vendor_guard.call(7, "lusha", server_error)
    with pytest.raises(CircuitOpenError):
        vendor_guard.call(7, "lusha", lambda: "never called")
    assert [c["ok"] for c in recorder.calls] == [True, False, False, False]
    assert {c["tenant_id"] for c in recorder.calls} == {7}


def test_a_full_bulkhead_is_neutral_and_not_a_call() -> None:
    recorder = Recorder()

    @contextmanager
    def full(vendor: str) -> Any:
        raise BulkheadFullError("busy", vendor=vendor)
        yield

    breakers = BreakerFactory(None, load_settings(), sinks=())
    threshold = breakers.settings.breaker_config("crm").error_threshold
    vendor_guard = guard(recorder, slots=full, breakers=breakers)
    for _ in range(threshold + 2):  # more refusals than failures would open the breaker
        with pytest.raises(BulkheadFullError):
            vendor_guard.call(1, "crm", lambda: "never called")
    assert recorder.calls == []
    assert breakers(1, "crm").current_state == "closed"
    # The same breaker, slots free again: the next call reaches the vendor.
    assert guard(recorder, breakers=breakers).call(1, "crm", lambda: "reached") == "reached"
    assert [c["ok"] for c in recorder.calls] == [True]
