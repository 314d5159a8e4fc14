"""CRM sync: push the contacts an enrichment run found into the tenant's CRM, in batches.

One task per sync run (queue `critical`), walking its open items (one per contact). Every
write carries an idempotency key derived from the source run and the contact, so a retried
or redelivered task — even one whose worker was killed mid-batch — never creates a
duplicate; items already recorded are skipped. A batch that fails for some records keeps
the rest and retries the failed ones one by one (recovered items keep `last_error_code`
`BATCH_REJECTED`; `RunView.recovered` counts them).

When the CRM cannot take more *now*, the task steps aside rather than fail or hold a worker:
- the tenant's own request rate (a Redis token bucket shared by all workers) is used up:
  it comes back when the bucket has refilled, without spending a retry (but after
  `MAX_IDLE_PAUSES` pauses in a row with nothing written it stops,
  `CRM_UNAVAILABLE:TENANT_RATE_STARVED`);
- the CRM answers 429, or pacing holds the tenant's CRM calls back after one: back-pressure,
  not failure. It comes back after the Retry-After (plus jitter) without spending a retry;
  only once `RATE_LIMITED_MAX_S` have passed without a record written does it stop,
  `CRM_UNAVAILABLE:RATE_LIMITED`;
- the CRM fails (5xx, timeout) or the tenant's breaker is open: it retries under the one
  retry policy (open breaker: after its cool-off). Each attempt that recorded progress
  starts a fresh retry budget, so a long run survives scattered blips, while a CRM that
  stays down stops the sync after `RETRY_MAX_ATTEMPTS` attempts with `CRM_UNAVAILABLE:<code>`
  on every record not yet written;
- it has worked for half its time limit: it continues in a fresh task.
A write whose answer was lost (a read timeout: the CRM may have applied it) is confirmed
first: the CRM is asked which of its idempotency keys it applied, and those records are
written, not failed and not sent again; only the rest go through the retry policy.
`AUTH_REQUIRED` stops the tenant's sync at once: a person must store a credential.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from pipeline import runs
from pipeline.companies import contacts_by_id
from pipeline.crm_tokens import AuthRequiredError
from pipeline.db.models import FINISHED_ITEM_STATUSES, ItemStatus, RunItem
from pipeline.deferrals import is_passing
from pipeline.errors import (
    CircuitOpenError,
    TenantRateExceededError,
    VendorClientError,
    VendorError,
    VendorPacedError,
    VendorRateLimitError,
)
from pipeline.redis_client import redis_for
from pipeline.resilience.guard import vendor_guard
from pipeline.resilience.rate_limit import TenantRateLimiter
from pipeline.settings import get_settings
from pipeline.vendors import registry
from pipeline.vendors.crm import CrmClient
from workers.app import app
from workers.resilient_task import ResilientTask, RunTask, spent_retries

log = structlog.get_logger(__name__)
# Rate pauses in a row without writing anything before a sync gives up: the tenant's other
# syncs keep taking the whole rate. (Each pause waits for a token, so this is minutes.)
MAX_IDLE_PAUSES = 100


def idempotency_key(source_run_id: Any, contact_id: int) -> str:
    return f"{source_run_id}:contact:{contact_id}"


@dataclass
class RunSync:
    """One pass over a sync run's open items; remembers which it finished."""

    run_id: str
    failed_attempts: int
    pauses: int
    tenant_id: int
    source_run_id: Any
    items: list[RunItem]
    client: CrmClient
    limiter: TenantRateLimiter
    limited_since: float = 0.0  # epoch s of the first rate-limit pause since progress
    finished: set[int] = field(default_factory=set)

    @property
    def remaining(self) -> list[RunItem]:
        return [item for item in self.items if item.id not in self.finished]

    def push(self, batch_size: int, *, until: float) -> None:
        """Write every open item, a batch at a time, until done or `until` (monotonic)."""
        contacts = contacts_by_id(self.tenant_id, [_contact_id(i) for i in self.items])
        for start in range(0, len(self.items), batch_size):
            if self.finished and time.monotonic() > until:
                return
            batch = []
            for item in self.items[start : start + batch_size]:
                if _contact_id(item) in contacts:
                    batch.append(item)
                else:  # deleted since the enrichment: nothing to push
                    self._finish(item, ItemStatus.FAILED, ["SOURCE_MISSING:contact"])
            records = [self._record(item, contacts) for item in batch]
            try:
                accepted = self._write_batch(records)
            except VendorError as lost:
                if not lost.maybe_applied:
                    raise
                accepted = self._confirm([r["idempotency_key"] for r in records], lost)
                for item, record in zip(batch, records, strict=True):
                    if record["idempotency_key"] in accepted:
                        self._finish(item, ItemStatus.SUCCEEDED)
                if len(accepted) < len(records):
                    raise lost from None  # the rest: under the retry policy, same keys
                continue
            for item, record in zip(batch, records, strict=True):
                if record["idempotency_key"] in accepted:
                    self._finish(item, ItemStatus.SUCCEEDED)
                else:
                    self._write_one(item, record)

    def _write_batch(self, records: list[dict[str, Any]]) -> set[str]:
        """The idempotency keys the CRM accepted; a batch refused as a whole accepts none
        (its records then go one by one, so one bad record cannot sink the others)."""
        if not records:
            return set()
        try:
            results = self._write(lambda: self.client.upsert_batch(self.tenant_id, records))
        except VendorClientError:
            return set()
        return {str(r.get("idempotency_key")) for r in results if r.get("ok")}

    def _write_one(self, item: RunItem, record: dict[str, Any]) -> None:
        key = record["idempotency_key"]
        single = {k: v for k, v in record.items() if k != "idempotency_key"}
        try:
            self._write(
                lambda: self.client.upsert_contact(self.tenant_id, single, idempotency_key=key)
            )
        except VendorClientError as exc:  # this record is wrong; the others go on
            self._finish(item, ItemStatus.FAILED, [f"CRM_REJECTED:{exc.code}"])
            return
        except VendorError as lost:
            if not lost.maybe_applied or key not in self._confirm([key], lost):
                raise
        runs.record_item_error(item.id, runs.RECOVERED)
        self._finish(item, ItemStatus.SUCCEEDED)

    def _confirm(self, keys: list[str], lost: VendorError) -> set[str]:
        """The keys among `keys` the CRM applied, asked after `lost` (a write whose answer
        never came). If the CRM cannot say, `lost` is raised: the retry policy takes the
        records on, sending them again under the same keys (safe, if not yet confirmed)."""
        try:
            applied = self._write(lambda: self.client.applied(self.tenant_id, keys))
        except (TenantRateExceededError, AuthRequiredError):
            raise  # a pause, or a person must act: the sync handles these as always
        except VendorError as exc:
            log.info("crm_sync.write_unconfirmed", error_code=lost.code, lookup_error=exc.code)
            raise lost from None
        log.info(
            "crm_sync.lost_answer_confirmed",
            error_code=lost.code,
            records=len(keys),
            applied=len(applied),
        )
        return set(applied) & set(keys)

    def _write(self, request: Any) -> Any:
        self.limiter.take(self.tenant_id)
        return vendor_guard().call(self.tenant_id, "crm", request, run_id=self.run_id)

    def _record(self, item: RunItem, contacts: dict[int, Any]) -> dict[str, Any]:
        contact_id = _contact_id(item)
        contact, company_name = contacts[contact_id]
        return {
            "idempotency_key": idempotency_key(self.source_run_id, contact_id),
            "external_id": f"pipeline:{self.tenant_id}:{contact_id}",
            "email": contact.email,
            "name": contact.name,
            "company": company_name or "",
        }

    def _finish(self, item: RunItem, status: ItemStatus, reasons: list[str] | None = None) -> None:
        runs.finish_item(item.id, status, reasons or [], deferred={})  # written: nothing waits
        self.finished.add(item.id)


@app.task(
    base=RunTask,
    bind=True,
    ignore_result=True,
    autoretry_for=(),
    name="tasks.crm_sync.sync_run",
)
def sync_run(
    self: ResilientTask,
    run_id: str,
    failed_attempts: int = 0,
    pauses: int = 0,
    limited_since: float = 0.0,
) -> int:
    """`failed_attempts`: attempts without progress made by earlier tasks of this run
    (a come-back after a rate pause carries them, so pauses never reset the budget);
    `pauses`: rate pauses in a row without progress (bounded by `MAX_IDLE_PAUSES`);
    `limited_since`: when (epoch s) the CRM's rate limit first held this run back since it
    last wrote something (bounded by `RATE_LIMITED_MAX_S`); 0 when it is not held back."""
    view = runs.get_run(uuid.UUID(run_id))
    if view is None:
        return 0
    settings = get_settings()
    sync = RunSync(
        run_id=run_id,
        failed_attempts=failed_attempts,
        pauses=pauses,
        limited_since=limited_since,
        tenant_id=view.run.tenant_id,
        source_run_id=view.run.parent_run_id,
        items=[i for i in view.items if i.status not in FINISHED_ITEM_STATUSES],
        client=registry.crm(),
        limiter=TenantRateLimiter(
            redis_for(settings.redis_url),
            prefix=settings.redis_key_prefix,
            vendor="crm",
            rate_per_s=settings.crm_rate_per_s,
            burst=settings.crm_burst,
            # long enough for the two requests a refused batch needs before any progress
            max_wait_s=max(1.0, 2.0 / settings.crm_rate_per_s),
        ),
    )
    runs.mark_running(uuid.UUID(run_id))
    try:
        sync.push(settings.crm_batch_size, until=time.monotonic() + work_budget_s(settings))
    except AuthRequiredError:
        return _stop(sync, "AUTH_REQUIRED", passing=False)
    except VendorPacedError as exc:  # held back after a 429: the CRM's limit, not ours
        return _rate_limited(self, sync, exc)
    except TenantRateExceededError as exc:
        if not sync.finished and sync.pauses >= MAX_IDLE_PAUSES:  # other syncs take it all
            return _stop(sync, "CRM_UNAVAILABLE:TENANT_RATE_STARVED", passing=True)
        return _come_back(sync, exc.retry_after_s or 1.0, why=exc.code)
    except VendorRateLimitError as exc:
        return _rate_limited(self, sync, exc)
    except VendorError as exc:
        return _retry_or_stop(self, sync, exc)
    if sync.remaining:
        return _come_back(sync, 0.0, why="TIME_BUDGET")
    return len(sync.finished)


def _rate_limited(task: ResilientTask, sync: RunSync, exc: VendorRateLimitError) -> int:
    """The CRM asked us to slow down (429), or pacing holds its calls back after one: step
    aside for the Retry-After plus jitter, spending no attempt of the retry budget; stop
    only once `RATE_LIMITED_MAX_S` have passed since the first such pause without progress."""
    now = time.time()
    since = now if sync.finished or not sync.limited_since else sync.limited_since
    if now - since >= get_settings().rate_limited_max_s:
        return _stop(sync, "CRM_UNAVAILABLE:RATE_LIMITED", passing=True)
    countdown = task.policy.retry_after_wait(exc.retry_after_s, key=task.request.id or "")
    return _come_back(sync, countdown, why=exc.code, limited_since=since)


def work_budget_s(settings: Any) -> float:
    """How long one sync task writes before it continues in a fresh one: half its time
    limit, and in any case well inside its soft limit (TASK_TIME_LIMIT_S - 10), which would
    otherwise cut a short-limited sync off mid-batch."""
    soft = max(1.0, settings.task_time_limit_s - 10)
    return max(0.5, min(settings.task_time_limit_s / 2, soft - 2))


def _retry_or_stop(task: ResilientTask, sync: RunSync, exc: VendorError) -> int:
    """The CRM failed: try again later under the retry policy, or stop if it is spent."""
    policy = task.policy
    attempt = 1 if sync.finished else sync.failed_attempts + spent_retries(task.request) + 1
    if isinstance(exc, CircuitOpenError):  # no call was made: wait out the cool-off
        cool_off = float(exc.details.get("retry_in_s") or 0.0)
        delay = cool_off + 0.05 if attempt < policy.max_attempts else None
    else:
        delay = policy.delay_for(attempt, exc, key=task.request.id or "")
    if delay is None:
        final = policy.final_error(exc, attempt)
        passing = isinstance(final, VendorError) and is_passing(final)
        return _stop(sync, f"CRM_UNAVAILABLE:{getattr(final, 'code', exc.code)}", passing=passing)
    # a fresh task carrying the attempts made so far (none, if this one made progress)
    return _come_back(sync, delay, why=exc.code, failed_attempts=attempt)


def _come_back(
    sync: RunSync,
    countdown: float,
    *,
    why: str,
    failed_attempts: int | None = None,
    limited_since: float | None = None,
) -> int:
    """Continue this run in a fresh task after `countdown` seconds (items done stay done).
    Attempts without progress carry over; progress starts the budget afresh."""
    if failed_attempts is None:  # a pause, not a failure: the budget is as it was
        failed_attempts = 0 if sync.finished else sync.failed_attempts
    elif sync.finished:
        failed_attempts = 1
    pauses = 0 if sync.finished else sync.pauses + (why == TenantRateExceededError.code)
    if limited_since is None:
        limited_since = 0.0 if sync.finished else sync.limited_since
    log.info(
        "crm_sync.continues_later",
        countdown_ms=round(countdown * 1000),
        why=why,
        failed_attempts=failed_attempts,
        pauses=pauses,
    )
    sync_run.apply_async(
        (sync.run_id,),
        {"failed_attempts": failed_attempts, "pauses": pauses, "limited_since": limited_since},
        countdown=countdown,
    )
    return len(sync.finished)


def _stop(sync: RunSync, reason: str, *, passing: bool) -> int:
    """The CRM cannot take more (credentials refused, or down past the retry policy). When
    that passes by itself (`passing`: down, holding us back), the records wait for it to be
    back (healing); refused credentials or an unreadable answer need a person."""
    log.warning("crm_sync.stopped", reason=reason)
    deferred = {"crm": reason} if passing else None
    for item in sync.remaining:
        runs.finish_item(item.id, ItemStatus.FAILED, [reason], deferred=deferred)
    return len(sync.finished)


def _contact_id(item: RunItem) -> int:
    return int(item.item_key.split(":")[1])
