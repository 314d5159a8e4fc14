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

- Our own database going away (`OperationalError`, `InterfaceError`) is not a failure of
  the work: whatever the task was doing, it is retried on the policy's outage curve until
  `DB_OUTAGE_MAX_S` into the outage, spending no attempt — the message is never acked as
  done while its outcome cannot be written. Past that it fails like any task: its death
  is spooled in Redis and written as a dead letter once the database is back.
- The broker refusing what the work produced (a chain's next step, a retry) is not a death
  either (`is_broker_outage`): the item stays open at its step in Postgres, and the
  reconciler re-drives it.
- A vendor or our own pacing asking us to slow down (`TenantRateExceededError`) is a pause:
  the task comes back after what was asked plus jitter, spending no attempt, for up to
  `RATE_LIMITED_MAX_S`.
- `begin()` runs before the work: a subclass refuses a message whose subject is finished
  or does not exist (`EnrichmentStep` marks its item's progress there); a refused message
  does nothing — no vendor call, no write, its chain stopped.

Attempt bookkeeping on run items is a separate concern: `workers.attempts`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import celery
import structlog
from celery.exceptions import Ignore, Reject
from kombu.exceptions import OperationalError as BrokerUnreachable

from pipeline import metrics
from pipeline.db.models import FINISHED_ITEM_STATUSES, OPEN_ITEM_STATUSES
from pipeline.errors import (
    DATABASE_ERRORS,
    InputError,
    TenantRateExceededError,
    VendorError,
    error_code,
)
from pipeline.resilience.guard import CallRecorder, vendor_guard
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings
from workers.deliveries import delivered_too_often

log = structlog.get_logger(__name__)
T = TypeVar("T")
# Errors whose retries spend no attempt: our database away, a rate limit holding us back.
FREE_RETRY_ERRORS = (*DATABASE_ERRORS, TenantRateExceededError)
# Message headers a retry carries: when the database outage (or the pause) this task is
# riding out began, and how many of its retries spent no attempt (outages and pauses).
OUTAGE_SINCE = "x_outage_since"
PAUSED_SINCE = "x_paused_since"
FREE_RETRIES = "x_free_retries"


class ResilientTask(celery.Task):
    autoretry_for = (VendorError, *DATABASE_ERRORS)
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
            self._stop_here()
        try:
            if not self.request.called_directly and not self.begin(*args, **kwargs):
                self._stop_here()
            return super().__call__(*args, **kwargs)
        except VendorError as exc:
            if self.give_up is None:
                raise
            log.info("task.gave_up", error_code=exc.code, vendor=exc.vendor)
            return self.give_up(exc, *args, **kwargs)
        except DATABASE_ERRORS as exc:  # tasks without autoretry, and begin(), land here
            raise self.retry(exc=exc) from None

    def begin(self, *args: Any, **kwargs: Any) -> bool:
        """Called before the work with the task's arguments; False: do nothing (the subject
        is finished or does not exist). Database errors here are retried as an outage."""
        return True

    def _stop_here(self) -> None:
        """End this message without running it. Returning would count as success and send
        a chain's next step, so the chain is dropped and the task ignored (acked)."""
        self.request.chain = self.request.callbacks = None
        raise Ignore()

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
            delay, max_retries, headers, attempt = self._next_try(exc)
            eta = datetime.now(UTC) + timedelta(seconds=delay)
            options["headers"] = headers
            metrics.count_retry(exc)
            log.info(
                "task.retry",
                attempt=attempt,  # None: an outage or a pause, which spends no attempt
                countdown_ms=round(delay * 1000),
                eta=eta.isoformat(),
                error_code=error_code(exc),
            )
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def _next_try(self, exc: BaseException) -> tuple[float, int | None, dict[str, Any], int | None]:
        """(delay, max_retries, headers, attempt) for retrying after `exc`; raises the final
        error when the policy is done. Outages and pauses are free retries: they spend no
        attempt of the vendor budget and carry when they began, so their own limits hold
        across retries."""
        request, now = self.request, time.time()
        headers = dict(request.headers or {})
        free = int(_header(request, FREE_RETRIES) or 0)
        key = request.id or ""
        if isinstance(exc, FREE_RETRY_ERRORS):
            outage = isinstance(exc, DATABASE_ERRORS)
            mark = OUTAGE_SINCE if outage else PAUSED_SINCE
            since = float(_header(request, mark) or now)
            if outage:
                delay = self.policy.outage_delay(free + 1, now - since, key=key)
            else:
                wait = getattr(exc, "retry_after_s", None) or 1.0
                delay = self.policy.pause_delay(wait, now - since, key=key)
            if delay is None:
                log.error("task.outlasted", error_code=error_code(exc), lasted_s=round(now - since))
                raise exc
            # A pause proves the database answered, and an outage says nothing of the rate
            # limit: each kind of free retry starts the other's clock afresh.
            headers.pop(PAUSED_SINCE if outage else OUTAGE_SINCE, None)
            marks = {mark: f"{since:.3f}", FREE_RETRIES: str(free + 1)}
            # Celery reads max_retries=None as "the task's default" (3): allow this one.
            return delay, request.retries + 1, {**headers, **marks}, None
        attempt = spent_retries(request) + 1
        delay = self.policy.delay_for(attempt, exc, key=key)
        if delay is None:
            final = self.policy.final_error(exc, attempt)
            if final is exc:
                raise exc
            raise final from exc
        headers.pop(OUTAGE_SINCE, None)  # the database is back: a later outage starts afresh
        headers.pop(PAUSED_SINCE, None)
        return delay, self.policy.max_attempts - 1 + free, headers, attempt

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
    so the run still closes and nothing waits forever.

    As it starts it marks its run's open items as moving (the reconciler's evidence that
    the run's message is not lost); a run with no open items — finished already, or none
    such — is not worked on, and the log says which."""

    # The items whose progress it marks as it starts, and whose count says whether it has
    # anything to do: a run's open items (start_run: its pending ones).
    touches: tuple[str, ...] = tuple(OPEN_ITEM_STATUSES)

    def begin(self, *args: Any, **kwargs: Any) -> bool:
        from pipeline import progress, runs

        given = args[0] if args else kwargs.get("run_id")
        try:
            run_id = uuid.UUID(str(given))
        except ValueError:  # the value is not echoed: it is whatever a sender put there
            raise Reject(
                InputError(f"{self.name}: its argument is not a run id"), requeue=False
            ) from None
        # Marks older than a tenth of the shortest lease are renewed: often enough that no
        # working run looks quiet, seldom enough that frequent come-backs cost little.
        fresh_s = min(get_settings().reconcile_lease_s.values()) / 10
        if progress.touch_open_items(run_id, self.touches, fresh_s=fresh_s):
            return True
        why = "nothing to do" if runs.run_exists(run_id) else "no such run"
        log.warning("run_task.refused", run_id=str(run_id), why=why)
        return False

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        from pipeline import runs
        from pipeline.db.models import ItemStatus

        if not args or is_broker_outage(exc):  # not the work's fault: the reconciler re-drives
            return
        code = error_code(exc)
        try:
            view = runs.get_run(uuid.UUID(str(args[0])))
            for item in view.items if view else []:
                if item.status not in FINISHED_ITEM_STATUSES:
                    runs.finish_item(item.id, ItemStatus.DEAD, [f"STEP_ERROR:{code}"])
        except Exception as error:  # the database itself is gone: the DLQ (issue 5) takes over
            log.error("run.not_recorded_dead", run_id=str(args[0]), error=type(error).__name__)


def spent_retries(request: Any) -> int:
    """Retries of this task that spent an attempt of the vendor budget: Celery counts every
    retry, and outages and pauses (`FREE_RETRIES`) are not attempts."""
    return max(
        0, int(getattr(request, "retries", 0) or 0) - int(_header(request, FREE_RETRIES) or 0)
    )


def _header(request: Any, name: str) -> Any:
    """A custom message header: Celery puts it both on the request and in its headers."""
    return getattr(request, name, None) or (request.headers or {}).get(name)


def is_broker_outage(error: BaseException) -> bool:
    """The broker could not be reached to send what the work produced (a chain's next step,
    a retry). The work itself is not at fault and nothing about it is lost: Postgres still
    shows the item open at its last step, and the reconciler re-drives it once the broker is
    back — so it is neither dead-lettered nor marked dead. (Celery wraps a retry it could
    not send in a `Reject` whose `reason` is the broker's error.)"""
    inner = getattr(error, "reason", None)
    if isinstance(inner, BaseException) and inner is not error:
        return is_broker_outage(inner)
    return isinstance(error, BrokerUnreachable)
