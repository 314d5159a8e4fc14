"""`ResilientTask`: the base class of every job task — retry policy, breakers, attempts.

    @app.task(base=ResilientTask, bind=True)
    def push(self, tenant_id, item_id, ...):
        self.call_vendor(tenant_id, "crm", client.upsert, batch)

- Retries: Celery's autoretry catches any `VendorError`; our `retry()` asks the one
  `RetryPolicy` whether and how long, and hands Celery that float as the countdown. A
  non-retryable error fails at once; a retryable one that outlasts the policy fails as
  `RetriesExhaustedError` carrying the last error's code.
- Breakers: `call_vendor` runs the call through `breaker_for(tenant, vendor)` and records it
  in `vendor_calls` (a call the open breaker refused reached no vendor and is not counted).
- Attempts: a task given `item_id` counts each attempt and its last error code on that item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import celery
import requests
import structlog

from pipeline import runs
from pipeline.breakers import breaker_for
from pipeline.errors import CircuitOpenError, RetriesExhaustedError, VendorError, classify
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ResilientTask(celery.Task):
    abstract = True
    autoretry_for = (VendorError,)
    acks_late = True
    reject_on_worker_lost = True
    _policy: ClassVar[RetryPolicy | None] = None

    @property
    def policy(self) -> RetryPolicy:
        if ResilientTask._policy is None:
            ResilientTask._policy = RetryPolicy.from_settings(get_settings())
        return ResilientTask._policy

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        if exc is not None and countdown is None and eta is None:
            attempt = self.request.retries + 1
            delay = self.policy.delay_for(attempt, exc, key=self.request.id or "")
            if delay is None:
                final = self._final_error(exc, attempt)
                if final is exc:
                    raise exc
                raise final from exc
            countdown, max_retries = delay, self.policy.max_attempts - 1
            log.info(
                "task.retry",
                attempt=attempt,
                countdown_ms=round(delay * 1000),
                error_code=getattr(exc, "code", type(exc).__name__),
            )
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    @staticmethod
    def _final_error(exc: BaseException, attempt: int) -> BaseException:
        if isinstance(exc, VendorError) and exc.retryable:
            return RetriesExhaustedError(
                f"gave up after {attempt} attempts: {exc.message}", last_error=exc, attempts=attempt
            )
        return exc

    def call_vendor(
        self,
        tenant_id: int,
        vendor: str,
        fn: Callable[..., T],
        *args: Any,
        run_id: Any = None,
        **kwargs: Any,
    ) -> T:
        """Call `fn` through the tenant's breaker; requests errors become `VendorError`s."""

        def guarded() -> T:
            try:
                return fn(*args, **kwargs)
            except requests.RequestException as exc:
                raise (classify(exc, vendor) or exc) from exc

        started = time.perf_counter()
        try:
            result = breaker_for(tenant_id, vendor).call(guarded)
        except CircuitOpenError:
            raise
        except Exception as exc:
            self._record_call(tenant_id, vendor, started, run_id, getattr(exc, "code", "ERROR"))
            raise
        self._record_call(tenant_id, vendor, started, run_id, None)
        return result

    @staticmethod
    def _record_call(
        tenant_id: int, vendor: str, started: float, run_id: Any, error_code: str | None
    ) -> None:
        """Stats are bookkeeping: a database hiccup here must not fail the vendor call."""
        try:
            runs.record_vendor_call(
                tenant_id=tenant_id,
                vendor=vendor,
                ok=error_code is None,
                error_code=error_code,
                latency_ms=(time.perf_counter() - started) * 1000,
                run_id=run_id,
            )
        except Exception as exc:
            log.warning("vendor_call.not_recorded", vendor=vendor, error=str(exc))

    # -- attempts on the run item --------------------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        if kwargs.get("item_id") is not None:
            runs.start_attempt(kwargs["item_id"])

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self._note_error(exc, kwargs)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self._note_error(exc, kwargs)

    @staticmethod
    def _note_error(exc: BaseException, kwargs: dict[str, Any]) -> None:
        if kwargs.get("item_id") is not None:
            runs.record_item_error(kwargs["item_id"], getattr(exc, "code", type(exc).__name__))
