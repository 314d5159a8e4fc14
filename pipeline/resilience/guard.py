"""The one path every vendor call takes: breaker, pacing, bulkhead, the call, then stats.

    vendor_guard().call(tenant_id, "crawler", lambda: session.get(url, timeout=...))

- the tenant's breaker decides first (an open breaker costs no call and no slot);
- pacing (`pipeline.resilience.pacing`) holds the call back while the vendor has recently
  answered this tenant 429, and learns from each 429 and each paced success; it reads its
  state from the breaker's own read, so a pair that is not paced costs nothing more;
- a bulkhead slot caps calls in flight to the vendor across all workers;
- `requests` errors become `VendorError`s *without* their cause attached: a requests
  exception's text holds the full URL, query string (API key) included; an answer the
  client cannot read becomes `VendorBadResponseError`;
- every call that reached the vendor is recorded (calls, errors, latency) and counted in
  the metrics; refusals by the breaker or the bulkhead reached nobody and are not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar

import requests
import structlog

from pipeline import metrics
from pipeline.errors import (
    TenantRateExceededError,
    VendorBadResponseError,
    VendorConnectionError,
    VendorError,
    VendorRateLimitError,
    classify,
)
from pipeline.resilience.pacing import Pacer

if TYPE_CHECKING:
    import redis

    from pipeline.resilience.retry import RetryPolicy
    from pipeline.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")


class CallRecorder(Protocol):
    def __call__(
        self,
        *,
        tenant_id: int,
        vendor: str,
        ok: bool,
        latency_ms: float,
        error_code: str | None,
        run_id: uuid.UUID | None,
    ) -> None: ...


class VendorGuard:
    def __init__(
        self,
        *,
        breakers: Callable[[int, str], Any],
        slots: Callable[[str], AbstractContextManager[Any]] | None = None,
        record: CallRecorder | None = None,
        pacer: Pacer | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._breakers = breakers
        self._slots = slots or (lambda vendor: nullcontext())
        self._record = record
        self._pacer = pacer
        self._timer = timer

    def call(
        self,
        tenant_id: int,
        vendor: str,
        fn: Callable[[], T],
        *,
        run_id: uuid.UUID | str | None = None,
        record: CallRecorder | None = None,
    ) -> T:
        """Run `fn` (one request to `vendor`) under every guard. Raises `VendorError`s only.

        `record` replaces the guard's recorder for this call (e.g. to collect the stats and
        write them later, with other rows, in one transaction)."""
        breaker = self._breakers(tenant_id, vendor)
        recorder = record or self._record
        pacer = self._pacer
        with breaker.calling() as ticket:
            # may wait for a paced slot, or raise VendorPacedError (neutral to the breaker)
            sent = pacer.admit(tenant_id, vendor, getattr(ticket, "pace", None)) if pacer else None
            with self._slots(vendor):
                started = self._timer()
                try:
                    result = fn()
                except Exception as exc:
                    error = _as_vendor_error(exc, vendor)
                    code = getattr(error, "code", "ERROR")
                    self._stat(recorder, tenant_id, vendor, started, run_id, code)
                    if pacer and sent and _vendor_429(error):
                        pacer.throttled(tenant_id, vendor, error, sent)
                    if error is exc:
                        raise
                    raise error from None
                self._stat(recorder, tenant_id, vendor, started, run_id, None)
            if pacer and sent:
                pacer.succeeded(tenant_id, vendor, sent)
            return result

    def _stat(
        self,
        recorder: CallRecorder | None,
        tenant_id: int,
        vendor: str,
        started: float,
        run_id: Any,
        error_code: str | None,
    ) -> None:
        """Stats are bookkeeping: failing to write them must not fail the vendor call."""
        seconds = self._timer() - started
        try:
            metrics.observe_vendor_call(vendor, seconds, error_code)
            if recorder is None:
                return
            recorder(
                tenant_id=tenant_id,
                vendor=vendor,
                ok=error_code is None,
                latency_ms=seconds * 1000,
                error_code=error_code,
                run_id=uuid.UUID(str(run_id)) if run_id else None,
            )
        except Exception as exc:
            log.warning("vendor_call.not_recorded", vendor=vendor, error=type(exc).__name__)


def _vendor_429(error: Exception) -> TypeGuard[VendorRateLimitError]:
    """The vendor's own 429 (not our rate limiter or pacing turning a call away)."""
    return isinstance(error, VendorRateLimitError) and not isinstance(
        error, TenantRateExceededError
    )


def _as_vendor_error(exc: Exception, vendor: str) -> Exception:
    if isinstance(exc, VendorError):
        return exc
    if isinstance(exc, ValueError) and isinstance(exc, requests.RequestException):
        return VendorBadResponseError(
            f"{vendor} answered something that is not JSON", vendor=vendor
        )
    if isinstance(exc, requests.RequestException):
        return classify(exc, vendor) or VendorConnectionError(
            f"{vendor} request failed ({type(exc).__name__})", vendor=vendor
        )
    if isinstance(exc, (KeyError, ValueError, TypeError, AttributeError, IndexError)):
        # the answer did not have the shape the client reads: the vendor's fault, not ours
        return VendorBadResponseError(
            f"{vendor} answered something unreadable ({type(exc).__name__})", vendor=vendor
        )
    return exc


_guard: VendorGuard | None = None


def configure_guard(guard: VendorGuard | None) -> None:
    """Install the guard `vendor_guard` returns (None: rebuild from settings on next use)."""
    global _guard
    _guard = guard


def vendor_guard() -> VendorGuard:
    global _guard
    if _guard is None:
        _guard = _default_guard()
    return _guard


def _default_guard() -> VendorGuard:
    from pipeline import runs
    from pipeline.breakers import breaker_for
    from pipeline.redis_client import redis_for
    from pipeline.resilience.bulkhead import Bulkhead
    from pipeline.settings import get_settings

    settings = get_settings()
    slots, pacer = None, None
    if not settings.embedded:  # one process: no bulkhead, no pacing
        client = redis_for(settings.redis_url)
        slots = Bulkhead(
            client,
            prefix=settings.redis_key_prefix,
            limit_for=settings.bulkhead_limit,
            wait_s=settings.bulkhead_wait_ms / 1000.0,
            slot_ttl_s=settings.bulkhead_slot_ttl_s,
        ).slot
        if settings.pacing_enabled:
            pacer = pacer_from_settings(client, settings)
    return VendorGuard(
        breakers=breaker_for, slots=slots, record=runs.record_vendor_call, pacer=pacer
    )


def pacer_from_settings(
    client: redis.Redis, settings: Settings, *, policy: RetryPolicy | None = None, **kw: Any
) -> Pacer:
    """The pacer the settings describe; its holds are the retry policy's Retry-After waits
    (`policy`, default: the one from settings). `kw`: clock, sleep, monotonic."""
    from pipeline.resilience.retry import RetryPolicy

    policy = policy or RetryPolicy.from_settings(settings)
    return Pacer(
        client,
        prefix=settings.redis_key_prefix,
        ceiling_per_s=settings.pacing_ceiling_per_s,
        floor_per_s=settings.pacing_floor_per_s,
        decrease=settings.pacing_decrease,
        increase_per_s=settings.pacing_increase_per_s,
        quiet_s=settings.pacing_quiet_s,
        max_wait_s=settings.pacing_max_wait_s,
        hold_for=policy.retry_after_wait,
        **kw,
    )
