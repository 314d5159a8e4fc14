"""Every error the product raises, the one vendor-error classifier, and the one error body.

Each class carries a stable `code` (what run items, dead letters, metrics and the API show)
and facts the resilience layer reads instead of branching on types:
`retryable` (does the retry policy try again?), `counts_as_failure` (does the circuit
breaker count it?) and `maybe_applied` (might the vendor have done the work although no
answer came back?). Messages never include URLs' query strings or bodies, where vendors
put API keys.
"""

from __future__ import annotations

import email.utils
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pybreaker

if TYPE_CHECKING:
    import requests

    from pipeline.db.errors import DATABASE_ERRORS as DATABASE_ERRORS

# Kept light on purpose (`import pipeline.errors` loads neither Celery nor SQLAlchemy, and
# not `requests` either): everything imports this module. The classifier imports `requests`
# when first called; DATABASE_ERRORS comes from `pipeline.db.errors` on first use.


class PipelineError(Exception):
    """Root of every error this product raises on purpose."""

    code = "PIPELINE_ERROR"
    http_status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class SettingsError(PipelineError):
    """A setting is missing or malformed; raised at start-up, naming the variable."""

    code = "SETTINGS_INVALID"


class InputError(PipelineError):
    """What a caller gave us is wrong (bad tenant, unknown column, empty file...)."""

    code = "INVALID_INPUT"
    http_status = 422


class AlreadyReplayedError(PipelineError):
    """This dead letter was replayed already (perhaps by a concurrent request)."""

    code = "ALREADY_REPLAYED"
    http_status = 409


class DependencyUnavailableError(PipelineError):
    """Our own broker or database cannot be reached; nothing was started."""

    code = "DEPENDENCY_UNAVAILABLE"
    http_status = 503


class LeaseLostError(PipelineError):
    """A lease this process held can no longer be vouched for (its token is gone, or it
    could not be renewed within its TTL): another holder may be working now, so stop before
    the next step and come back later (`pipeline.resilience.lease`)."""

    code = "LEASE_LOST"
    http_status = 503


class UnauthorizedError(PipelineError):
    """No API key, or one we do not know (or revoked). The message never echoes the key."""

    code = "UNAUTHORIZED"
    http_status = 401


class ForbiddenError(PipelineError):
    """A valid key asking for something only an admin key may do."""

    code = "FORBIDDEN"
    http_status = 403


class NotFoundError(PipelineError):
    """No such thing — or one that belongs to another tenant: the two look the same, so a
    tenant cannot learn which ids exist."""

    code = "NOT_FOUND"
    http_status = 404


class VendorError(PipelineError):
    """A call to a third-party vendor failed."""

    code = "VENDOR_ERROR"
    http_status = 502
    retryable = False
    counts_as_failure = True
    # The request may have reached the vendor and been applied, its answer lost (a read
    # timeout, a connection cut after sending): a write must be confirmed with the vendor
    # before it is called failed. False when nothing can have been applied (an answer came,
    # or the connection was never made).
    maybe_applied = False

    def __init__(
        self,
        message: str,
        *,
        vendor: str = "",
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        maybe_applied: bool | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.vendor = vendor
        self.status_code = status_code
        if maybe_applied is not None:
            self.maybe_applied = maybe_applied


class VendorAuthError(VendorError):
    """401/403: the credentials were refused. Retrying with the same ones cannot help."""

    code = "AUTH_FAILED"
    counts_as_failure = False


class VendorRateLimitError(VendorError):
    """429: the vendor asked us to slow down; wait at least `retry_after_s`."""

    code = "RATE_LIMITED"
    http_status = 429
    retryable = True
    counts_as_failure = False

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class TenantRateExceededError(VendorRateLimitError):
    """Our own per-tenant request rate (a token bucket shared by workers) is used up for
    longer than a worker should wait: no request was made; come back in `retry_after_s`.
    A pause, not a failure: it never counts against the retry budget or a breaker."""

    code = "TENANT_RATE_EXCEEDED"


class VendorPacedError(TenantRateExceededError):
    """The vendor answered this tenant 429 recently and pacing (`pipeline.resilience.pacing`)
    holds calls back — until its Retry-After has passed, or to the reduced rate — longer
    than a worker should wait. No request was made; come back in `retry_after_s`. A pause
    like `TenantRateExceededError` (it is one): no retry budget spent, no breaker count."""

    code = "PACED"


class TokenLockBusyError(VendorError):
    """Another worker has been fetching this tenant's access token for the whole bounded
    wait. Nothing reached the vendor, so no breaker counts it; try again shortly."""

    code = "TOKEN_LOCK_BUSY"
    http_status = 503
    retryable = True
    counts_as_failure = False


class VendorServerError(VendorError):
    """5xx: the vendor is failing; worth another try later."""

    code = "SERVER_ERROR"
    retryable = True


class VendorTimeoutError(VendorError):
    """The vendor did not answer within the configured timeout. After a read timeout the
    request may have been applied (`maybe_applied`); a connect timeout sent nothing."""

    code = "TIMEOUT"
    http_status = 504
    retryable = True
    maybe_applied = True


class VendorConnectionError(VendorTimeoutError):
    """The vendor could not be reached at all (refused, reset, DNS) — or the connection
    broke after the request went out, when `maybe_applied` is set on the instance."""

    code = "CONNECTION_FAILED"
    http_status = 502
    maybe_applied = False


class VendorBadResponseError(VendorError):
    """The vendor answered, but not with what its contract promises (missing fields, bad
    JSON). A broken vendor: counted by the breaker; not retried (it would answer the same)."""

    code = "BAD_RESPONSE"


class VendorClientError(VendorError):
    """Any other 4xx: our request was wrong. Never retried, never a breaker failure."""

    code = "CLIENT_ERROR"
    http_status = 422
    counts_as_failure = False


class BulkheadFullError(VendorError):
    """Every slot for this vendor is busy: try later. No call was made, so the breaker
    does not count it."""

    code = "BULKHEAD_FULL"
    http_status = 503
    retryable = True
    counts_as_failure = False


class CircuitOpenError(VendorError, pybreaker.CircuitBreakerError):
    """The tenant's breaker for this vendor is open: no call was made."""

    code = "CIRCUIT_OPEN"
    http_status = 503
    counts_as_failure = False


class RetriesExhaustedError(VendorError):
    """The retry policy gave up; `last_error` is what the final attempt met.

    Built from a message alone too: Celery rebuilds stored exceptions from their args.
    """

    code = "RETRIES_EXHAUSTED"

    def __init__(
        self, message: str, *, last_error: VendorError | None = None, attempts: int = 0
    ) -> None:
        details: dict[str, Any] = {"attempts": attempts}
        if last_error is not None:
            details["last_error_code"] = last_error.code
        super().__init__(
            message,
            vendor=last_error.vendor if last_error else "",
            status_code=last_error.status_code if last_error else None,
            details=details,
            maybe_applied=last_error.maybe_applied if last_error else None,
        )
        self.last_error = last_error
        self.attempts = attempts


def error_code(error: BaseException) -> str:
    """The code an error is known by in items, dead letters, logs and metrics: ours carry a
    stable one; anything else is named by its class. (SQLAlchemy's errors have a `code`
    too, but it is a documentation link id such as `e3q8`, not something to show.)"""
    if isinstance(error, PipelineError):
        return error.code
    return type(error).__name__


def __getattr__(name: str) -> Any:
    """`DATABASE_ERRORS` on first use (PEP 562): it needs SQLAlchemy, this module does not."""
    if name == "DATABASE_ERRORS":
        from pipeline.db.errors import DATABASE_ERRORS

        return DATABASE_ERRORS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_transient(error: BaseException) -> bool:
    """Worth another try later: a retryable vendor error, or our database dropping out."""
    if isinstance(error, VendorError):
        return error.retryable
    from pipeline.db.errors import DATABASE_ERRORS

    return isinstance(error, DATABASE_ERRORS)


def _where(request: requests.Request | requests.PreparedRequest | None) -> str:
    if request is None or not request.url:
        return ""
    return f" on {request.method} {urlsplit(request.url).path}"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # asctime form carries no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def classify(
    outcome: requests.Response | BaseException, vendor: str = "", *, now: float | None = None
) -> VendorError | None:
    """Turn a `requests` response or exception into the matching `VendorError`.

    Returns None for a response that is not an error (status < 400). `now` (epoch seconds)
    dates a Retry-After given as an HTTP date; default: the current time.
    """
    if isinstance(outcome, VendorError):
        return outcome
    import requests

    if isinstance(outcome, requests.HTTPError) and outcome.response is not None:
        outcome = outcome.response  # raise_for_status(): judge the response, not the raise
    if isinstance(outcome, requests.Response):
        if outcome.status_code < 400:
            return None
        return classify_status(
            outcome.status_code,
            vendor,
            where=_where(outcome.request),
            retry_after=outcome.headers.get("Retry-After"),
            now=now,
        )
    name = vendor or "vendor"
    if isinstance(outcome, requests.ConnectTimeout):  # before Timeout: it is one, and more
        return VendorTimeoutError(
            f"{name} connect timed out{_where(outcome.request)}",
            vendor=vendor,
            maybe_applied=False,
        )
    if isinstance(outcome, requests.Timeout):
        return VendorTimeoutError(f"{name} timed out{_where(outcome.request)}", vendor=vendor)
    if isinstance(outcome, requests.ConnectionError):
        return VendorConnectionError(
            f"{name} unreachable{_where(outcome.request)}",
            vendor=vendor,
            maybe_applied=not _never_connected(outcome),
        )
    if isinstance(outcome, requests.RequestException):
        return VendorConnectionError(
            f"{name} request failed ({type(outcome).__name__}){_where(outcome.request)}",
            vendor=vendor,
        )
    return None


def _never_connected(error: requests.ConnectionError) -> bool:
    """Did this connection error happen before a request could go out (refused, DNS, TLS
    handshake, proxy)? Anything else — the connection cut while we waited for the answer —
    may have come after the vendor applied the request."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(error, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return True
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def classify_status(
    status: int,
    vendor: str = "",
    *,
    where: str = "",
    retry_after: str | None = None,
    now: float | None = None,
) -> VendorError:
    """The `VendorError` for an HTTP error status (>= 400), whatever client saw it."""
    message = f"{vendor or 'vendor'} answered {status}{where}"
    kw: dict[str, Any] = {"vendor": vendor, "status_code": status}
    if status == 429:
        return VendorRateLimitError(
            message, retry_after_s=parse_retry_after(retry_after, now=now), **kw
        )
    if status in (401, 403):
        return VendorAuthError(message, **kw)
    if status < 500:
        return VendorClientError(message, **kw)
    return VendorServerError(message, **kw)


def raise_for_vendor(response: requests.Response, vendor: str) -> requests.Response:
    """Return `response` if it is not an error, else raise its classified `VendorError`."""
    error = classify(response, vendor)
    if error is not None:
        raise error
    return response


def error_body(
    *,
    status_code: int,
    message: str,
    error_code: str,
    details: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The standardized error body every API error uses."""
    return {
        "error": True,
        "status_code": status_code,
        "message": message,
        "details": details or {},
        "error_code": error_code,
        "correlation_id": correlation_id or str(uuid.uuid4()),
        "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
    }


def error_body_for(exc: PipelineError, *, correlation_id: str | None = None) -> dict[str, Any]:
    return error_body(
        status_code=exc.http_status,
        message=exc.message,
        error_code=exc.code,
        details=exc.details,
        correlation_id=correlation_id,
    )
