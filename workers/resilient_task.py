"""`ResilientTask`: the base class of every job task — the retry policy and guarded calls.

    @app.task(base=ResilientTask, bind=True)
    def push(self, tenant_id, item_id, ...):
        self.call_vendor(tenant_id, "crm", lambda: client.upsert(batch))

- Retries: Celery's autoretry catches any `VendorError` (and our database dropping out:
  `OperationalError`, `InterfaceError`); our `retry()` asks the one
  `RetryPolicy` whether and how long, and gives Celery an exact ETA (millisecond precision,
  not Celery's whole-second backoff). A non-retryable error fails at once; a retryable one
  that outlasts the policy fails as `RetriesExhaustedError` carrying the last error's code.
- Vendor calls: `call_vendor` sends them down the one guarded path (`VendorGuard`:
  breaker, bulkhead, classification, call stats).
- A task may give up gracefully: set `give_up` to a function `(exc, *args, **kwargs)`
  returning the task's result, and a final `VendorError` returns that instead of failing
  (how an enrichment step annotates its context and lets the chain go on).

Attempt bookkeeping on run items is a separate concern: `workers.attempts`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import celery
import structlog
from celery.exceptions import Ignore
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline import metrics
from pipeline.errors import VendorError
from pipeline.resilience.guard import CallRecorder, vendor_guard
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings
from workers.deliveries import delivered_too_often

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ResilientTask(celery.Task):
    autoretry_for = (VendorError, OperationalError, InterfaceError)
    acks_late = True
    reject_on_worker_lost = True
    give_up: Callable[..., Any] | None = None
    _policy: ClassVar[RetryPolicy | None] = None

    @property
    def policy(self) -> RetryPolicy:
        if ResilientTask._policy is None:
            ResilientTask._policy = RetryPolicy.from_settings(get_settings())
        return ResilientTask._policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if delivered_too_often(self, args, kwargs):  # a poison message: dead-lettered
            # Stop here: returning would count as success and send a chain's next step.
            self.request.chain = self.request.callbacks = None
            raise Ignore()
        try:
            return super().__call__(*args, **kwargs)
        except VendorError as exc:
            if self.give_up is None:
                raise
            log.info("task.gave_up", error_code=exc.code, vendor=exc.vendor)
            return self.give_up(exc, *args, **kwargs)

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
                final = self.policy.final_error(exc, attempt)
                if final is exc:
                    raise exc
                raise final from exc
            eta = datetime.now(UTC) + timedelta(seconds=delay)
            max_retries = self.policy.max_attempts - 1
            metrics.count_retry(exc)
            log.info(
                "task.retry",
                attempt=attempt,
                countdown_ms=round(delay * 1000),
                eta=eta.isoformat(),
                error_code=getattr(exc, "code", type(exc).__name__),
            )
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def call_vendor(
        self,
        tenant_id: int,
        vendor: str,
        fn: Callable[[], T],
        *,
        run_id: uuid.UUID | str | None = None,
        record: CallRecorder | None = None,
    ) -> T:
        """One request to `vendor` for `tenant_id`, through the tenant's breaker and the
        vendor's bulkhead; `requests` errors arrive as `VendorError`s."""
        return vendor_guard().call(tenant_id, vendor, fn, run_id=run_id, record=record)


class RunTask(ResilientTask):
    """A task that works through a whole run (`task(run_id)`): if it fails for good in a
    way no reason covers, the run's open items are recorded `dead` with `STEP_ERROR:<code>`,
    so the run still closes and nothing waits forever."""

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        from pipeline import runs
        from pipeline.db.models import ItemStatus

        if not args:
            return
        code = getattr(exc, "code", type(exc).__name__)
        try:
            view = runs.get_run(uuid.UUID(str(args[0])))
            for item in view.items if view else []:
                if item.status not in runs.TERMINAL:
                    runs.finish_item(item.id, ItemStatus.DEAD, [f"STEP_ERROR:{code}"])
        except Exception as error:  # the database itself is gone: the DLQ (issue 5) takes over
            log.error("run.not_recorded_dead", run_id=str(args[0]), error=type(error).__name__)
