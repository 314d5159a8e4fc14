from __future__ import annotations

import ast
import calendar
import email.utils
import importlib
import os
import pickle
import pkgutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pybreaker
import pytest
import requests

import pipeline
from pipeline import errors
from pipeline.errors import (
    CircuitOpenError,
    PipelineError,
    RetriesExhaustedError,
    VendorAuthError,
    VendorClientError,
    VendorConnectionError,
    VendorError,
    VendorRateLimitError,
    VendorServerError,
    VendorTimeoutError,
    classify,
    error_body,
    error_body_for,
    parse_retry_after,
    raise_for_vendor,
)
from tests.support.api import ERROR_KEYS

REPO = Path(__file__).resolve().parents[2]
SECRET_URL = "http://x/path?api_key=SECRET"


def make_response(
    status: int, headers: dict[str, str] | None = None, *, url: str | None = SECRET_URL
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    if url is not None:
        resp.request = requests.Request("GET", url).prepare()
        resp.url = url
    return resp


def prepared(url: str = SECRET_URL) -> requests.PreparedRequest:
    return requests.Request("GET", url).prepare()


# --- classify: responses -----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304, 399])
def test_non_error_response_classifies_as_none(status: int) -> None:
    assert classify(make_response(status), "crm") is None


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_classify_as_auth_error(status: int) -> None:
    error = classify(make_response(status), "crm")
    assert type(error) is VendorAuthError
    assert error.status_code == status
    assert error.vendor == "crm"


def test_429_with_delta_seconds_retry_after_is_rate_limit() -> None:
    error = classify(make_response(429, {"Retry-After": "7"}), "crm")
    assert type(error) is VendorRateLimitError
    assert error.retry_after_s == 7.0
    assert error.status_code == 429


def test_429_with_http_date_retry_after_is_rate_limit() -> None:
    future = email.utils.formatdate(time.time() + 60, usegmt=True)
    error = classify(make_response(429, {"Retry-After": future}), "crm")
    assert type(error) is VendorRateLimitError
    assert error.retry_after_s is not None
    assert 55.0 <= error.retry_after_s <= 60.0


def test_429_with_past_http_date_waits_zero() -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    error = classify(make_response(429, {"Retry-After": past}), "crm")
    assert type(error) is VendorRateLimitError
    assert error.retry_after_s == 0.0


def test_429_without_retry_after_has_no_wait() -> None:
    error = classify(make_response(429), "crm")
    assert type(error) is VendorRateLimitError
    assert error.retry_after_s is None


def test_429_with_garbage_retry_after_has_no_wait() -> None:
    error = classify(make_response(429, {"Retry-After": "soon"}), "crm")
    assert type(error) is VendorRateLimitError
    assert error.retry_after_s is None


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_other_4xx_classify_as_client_error(status: int) -> None:
    error = classify(make_response(status), "crm")
    assert type(error) is VendorClientError
    assert error.status_code == status


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_classify_as_server_error(status: int) -> None:
    error = classify(make_response(status), "crm")
    assert type(error) is VendorServerError
    assert error.status_code == status


def test_response_without_request_still_classifies() -> None:
    error = classify(make_response(503, url=None), "crm")
    assert type(error) is VendorServerError
    assert "503" in str(error)


# --- classify: exceptions ----------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [requests.Timeout, requests.ReadTimeout])
def test_timeouts_classify_as_timeout_error(exc_type: type[requests.Timeout]) -> None:
    error = classify(exc_type("timed out", request=prepared()), "crm")
    assert type(error) is VendorTimeoutError
    assert error.code == "TIMEOUT"
    assert error.vendor == "crm"


def test_connect_timeout_classifies_as_timeout_not_connection_error() -> None:
    exc = requests.ConnectTimeout("connect timed out", request=prepared())
    assert isinstance(exc, requests.ConnectionError)  # the trap this test guards against
    error = classify(exc, "crm")
    assert type(error) is VendorTimeoutError
    assert error.code == "TIMEOUT"


def test_a_read_timeout_may_have_been_applied_a_connect_timeout_sent_nothing() -> None:
    read = classify(requests.ReadTimeout("read timed out", request=prepared()), "crm")
    connect = classify(requests.ConnectTimeout("connect timed out", request=prepared()), "crm")
    assert read is not None and read.maybe_applied
    assert connect is not None and not connect.maybe_applied


def test_a_refused_connection_sent_nothing_a_connection_cut_after_sending_may_have() -> None:
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    refused = requests.ConnectionError(
        MaxRetryError(None, "/x", NewConnectionError(None, "refused")), request=prepared()
    )
    cut = requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError()), request=prepared()
    )
    assert not classify(refused, "crm").maybe_applied  # type: ignore[union-attr]
    assert classify(cut, "crm").maybe_applied  # type: ignore[union-attr]
    assert not VendorServerError("503").maybe_applied, "an answer came: nothing is unknown"


def test_retries_exhausted_keeps_whether_the_last_attempt_may_have_been_applied() -> None:
    timeout = VendorTimeoutError("t", vendor="crm")
    assert RetriesExhaustedError("gave up", last_error=timeout, attempts=3).maybe_applied
    server = VendorServerError("503", vendor="crm")
    assert not RetriesExhaustedError("gave up", last_error=server, attempts=3).maybe_applied


def test_connection_error_classifies_as_connection_error() -> None:
    error = classify(requests.ConnectionError("refused", request=prepared()), "crm")
    assert type(error) is VendorConnectionError
    assert error.code == "CONNECTION_FAILED"


def test_other_request_exception_classifies_as_connection_error() -> None:
    error = classify(requests.TooManyRedirects("loop", request=prepared()), "crm")
    assert type(error) is VendorConnectionError


def test_exception_without_request_still_classifies() -> None:
    assert type(classify(requests.Timeout("t"), "crm")) is VendorTimeoutError
    assert type(classify(requests.ConnectionError("c"), "crm")) is VendorConnectionError


def test_vendor_error_classifies_as_itself() -> None:
    original = VendorServerError("boom", vendor="crm")
    assert classify(original, "crm") is original


def test_unrelated_exception_classifies_as_none() -> None:
    assert classify(ValueError("nope"), "crm") is None


def test_raise_for_vendor_raises_classified_error_and_passes_success() -> None:
    ok = make_response(200)
    assert raise_for_vendor(ok, "crm") is ok
    with pytest.raises(VendorServerError):
        raise_for_vendor(make_response(500), "crm")


# --- messages never leak query strings --------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 503])
def test_response_error_message_omits_query_string(status: int) -> None:
    error = classify(make_response(status, {"Retry-After": "1"}), "crm")
    assert error is not None
    assert "SECRET" not in str(error)
    assert "api_key" not in str(error)
    assert "SECRET" not in error.message
    assert "/path" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        requests.Timeout("t", request=prepared()),
        requests.ConnectTimeout("t", request=prepared()),
        requests.ReadTimeout("t", request=prepared()),
        requests.ConnectionError("c", request=prepared()),
        requests.TooManyRedirects("r", request=prepared()),
    ],
    ids=lambda e: type(e).__name__,
)
def test_exception_error_message_omits_query_string(exc: requests.RequestException) -> None:
    error = classify(exc, "crm")
    assert error is not None
    assert "SECRET" not in str(error)
    assert "api_key" not in str(error)
    assert "/path" in str(error)


# --- codes and flags --------------------------------------------------------------------


def _every_core_module() -> None:
    """Import all of `pipeline` (not the workers' and tasks' modules: importing those hooks
    Celery signals into this process), so an error class defined anywhere in it is seen."""
    for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not module.name.endswith(".__main__"):  # `python -m` entry points run
            importlib.import_module(module.name)


def _taxonomy(root: type[PipelineError]) -> list[type[PipelineError]]:
    found: dict[type[PipelineError], None] = {root: None}
    for sub in root.__subclasses__():
        found.update(dict.fromkeys(_taxonomy(sub)))
    return list(found)


_every_core_module()
# Derived, not listed: a new error class cannot be left out of the checks below.
ALL_CLASSES = sorted(_taxonomy(PipelineError), key=lambda cls: cls.__name__)


def test_the_taxonomy_walk_finds_classes_beyond_this_modules_imports() -> None:
    names = {cls.__name__ for cls in ALL_CLASSES}
    assert {"ErpFieldRejectedError", "AuthRequiredError", "VendorPacedError"} <= names


def test_workers_and_tasks_define_no_error_class_of_their_own() -> None:
    """They are not imported above; an error class belongs in the core anyway."""
    names = {cls.__name__ for cls in ALL_CLASSES}
    for source in [*(REPO / "workers").glob("*.py"), *(REPO / "tasks").glob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(base, "id", getattr(base, "attr", "")) for base in node.bases}
                assert not bases & names, f"{source.name}: {node.name}"


def test_every_error_class_has_a_distinct_code() -> None:
    codes = [cls.code for cls in ALL_CLASSES]
    assert len(set(codes)) == len(codes)


def test_error_codes_are_stable() -> None:
    """Codes are stored in items and dead letters and shown by the API: a new class adds
    its line here; an existing line never changes."""
    assert {cls.__name__: cls.code for cls in ALL_CLASSES} == {
        "AlreadyReplayedError": "ALREADY_REPLAYED",
        "AuthRequiredError": "AUTH_REQUIRED",
        "BulkheadFullError": "BULKHEAD_FULL",
        "CircuitOpenError": "CIRCUIT_OPEN",
        "DependencyUnavailableError": "DEPENDENCY_UNAVAILABLE",
        "ErpDatabaseMissingError": "ERP_DB_MISSING",
        "ErpFieldRejectedError": "ERP_FIELD_REJECTED",
        "ForbiddenError": "FORBIDDEN",
        "InputError": "INVALID_INPUT",
        "LeaseLostError": "LEASE_LOST",
        "NotFoundError": "NOT_FOUND",
        "PipelineError": "PIPELINE_ERROR",
        "RetriesExhaustedError": "RETRIES_EXHAUSTED",
        "SettingsError": "SETTINGS_INVALID",
        "TenantRateExceededError": "TENANT_RATE_EXCEEDED",
        "TokenLockBusyError": "TOKEN_LOCK_BUSY",
        "UnauthorizedError": "UNAUTHORIZED",
        "VendorAuthError": "AUTH_FAILED",
        "VendorBadResponseError": "BAD_RESPONSE",
        "VendorClientError": "CLIENT_ERROR",
        "VendorConnectionError": "CONNECTION_FAILED",
        "VendorError": "VENDOR_ERROR",
        "VendorPacedError": "PACED",
        "VendorRateLimitError": "RATE_LIMITED",
        "VendorServerError": "SERVER_ERROR",
        "VendorTimeoutError": "TIMEOUT",
    }


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_survives_pickle_and_a_rebuild_from_its_message(
    cls: type[PipelineError],
) -> None:
    """Prefork workers pickle a task's exception to the parent; Celery rebuilds stored
    exceptions as `cls(*args)`: each class must come back with its code and message."""
    error = cls("what went wrong")
    for rebuilt in (pickle.loads(pickle.dumps(error)), cls(*error.args)):
        assert type(rebuilt) is cls
        assert rebuilt.code == cls.code
        assert str(rebuilt) == "what went wrong"
    assert 400 <= cls.http_status < 600
    assert (cls.__doc__ or "").strip(), "say why the error exists"


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (VendorServerError, True),
        (VendorTimeoutError, True),
        (VendorConnectionError, True),
        (VendorRateLimitError, True),
        (VendorClientError, False),
        (VendorAuthError, False),
        (CircuitOpenError, False),
        (RetriesExhaustedError, False),
    ],
)
def test_retryable_flag_follows_docstring(cls: type[VendorError], retryable: bool) -> None:
    assert cls.retryable is retryable


@pytest.mark.parametrize(
    ("cls", "counts"),
    [
        (VendorServerError, True),
        (VendorTimeoutError, True),
        (VendorConnectionError, True),
        (VendorClientError, False),
        (VendorAuthError, False),
        (VendorRateLimitError, False),
        (CircuitOpenError, False),
    ],
)
def test_counts_as_failure_flag_follows_docstring(cls: type[VendorError], counts: bool) -> None:
    assert cls.counts_as_failure is counts


def test_circuit_open_error_is_a_pybreaker_circuit_breaker_error() -> None:
    error = CircuitOpenError("open", vendor="crm")
    assert isinstance(error, pybreaker.CircuitBreakerError)
    assert isinstance(error, VendorError)
    assert error.vendor == "crm"
    with pytest.raises(pybreaker.CircuitBreakerError):
        raise error


def test_retries_exhausted_error_carries_last_error() -> None:
    last = VendorServerError("boom", vendor="crm", status_code=503)
    error = RetriesExhaustedError("gave up", last_error=last, attempts=3)
    assert error.last_error is last
    assert error.attempts == 3
    assert error.vendor == "crm"
    assert error.status_code == 503
    assert error.details == {"last_error_code": "SERVER_ERROR", "attempts": 3}


# --- error body -------------------------------------------------------------------------


def test_error_body_has_exactly_the_standard_keys() -> None:
    body = error_body(status_code=502, message="crm answered 503", error_code="SERVER_ERROR")
    assert set(body) == ERROR_KEYS
    assert body["error"] is True
    assert body["status_code"] == 502
    assert body["message"] == "crm answered 503"
    assert body["error_code"] == "SERVER_ERROR"
    assert body["details"] == {}
    assert body["correlation_id"]
    datetime.fromisoformat(body["timestamp"])


def test_error_body_uses_given_correlation_id_and_timestamp() -> None:
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = error_body(
        status_code=429,
        message="slow down",
        error_code="RATE_LIMITED",
        details={"retry_after_s": 7.0},
        correlation_id="abc-123",
        timestamp=stamp,
    )
    assert body["correlation_id"] == "abc-123"
    assert body["timestamp"] == stamp.isoformat()
    assert body["details"] == {"retry_after_s": 7.0}


def test_error_body_generates_distinct_correlation_ids() -> None:
    first = error_body(status_code=500, message="m", error_code="X")
    second = error_body(status_code=500, message="m", error_code="X")
    assert first["correlation_id"] != second["correlation_id"]


def test_error_body_for_exception_uses_its_code_and_status() -> None:
    error = classify(make_response(429, {"Retry-After": "7"}), "crm")
    assert error is not None
    body = error_body_for(error, correlation_id="cid")
    assert set(body) == ERROR_KEYS
    assert body["error"] is True
    assert body["status_code"] == 429
    assert body["error_code"] == "RATE_LIMITED"
    assert body["correlation_id"] == "cid"
    assert "SECRET" not in body["message"]


# --- parse_retry_after ------------------------------------------------------------------

NOW = float(calendar.timegm((2015, 10, 21, 7, 28, 0, 0, 0, 0)))


def test_parse_retry_after_delta_seconds() -> None:
    assert parse_retry_after("7", now=NOW) == 7.0
    assert parse_retry_after(" 2.5 ", now=NOW) == 2.5


def test_parse_retry_after_negative_delta_clamps_to_zero() -> None:
    assert parse_retry_after("-5", now=NOW) == 0.0


def test_parse_retry_after_http_date_uses_injected_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=NOW) == 30.0


def test_parse_retry_after_rfc850_date_uses_injected_now() -> None:
    assert parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", now=NOW) == 30.0


def test_parse_retry_after_past_http_date_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "not a date at all"])
def test_parse_retry_after_missing_or_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_defaults_now_to_current_time() -> None:
    future = email.utils.formatdate(time.time() + 100, usegmt=True)
    result = parse_retry_after(future)
    assert result is not None
    assert 95.0 <= result <= 100.0


def test_parse_retry_after_asctime_date_is_gmt_whatever_local_tz() -> None:
    # HTTP dates are always GMT, and recipients must accept the zoneless asctime form
    # (RFC 9110 section 5.6.7); the host's time zone must not shift the wait.
    value = "Wed Oct 21 07:28:30 2015"
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        assert errors.parse_retry_after(value, now=NOW) == 30.0
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_a_broker_outage_is_told_apart_also_inside_celerys_reject() -> None:
    from celery.exceptions import Reject
    from kombu.exceptions import OperationalError as BrokerDown

    from workers.resilient_task import is_broker_outage

    down = BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    assert is_broker_outage(down)
    assert is_broker_outage(Reject(down, requeue=False)), "a retry Celery could not send"
    assert not is_broker_outage(Reject(VendorServerError("x", vendor="crm"), requeue=False))
    assert not is_broker_outage(VendorServerError("x", vendor="crm"))
    assert not is_broker_outage(ValueError("x"))
