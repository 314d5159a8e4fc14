"""ERP export: write a run's enriched companies to the tenant's ERP as partners.

One task per export run (queue `export`), walking its open items. Every write is safe to
repeat: a partner is found by our `ref` first and updated, else created. A write the ERP
refuses for a field is retried once without the non-essential fields
(`EXPORT_STRIPPABLE_FIELDS`), recorded as `EXPORT_FIELDS_STRIPPED:<fields>`; a record that
still fails is marked and the export goes on. When the ERP cannot be reached or its
database is missing, the run's `export_disabled` flag says why and the remaining items are
recorded degraded — the export never aborts and never retries forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import structlog

from pipeline import runs
from pipeline.companies import companies_by_id, contacts_of
from pipeline.db.models import FINISHED_ITEM_STATUSES, ItemStatus
from pipeline.deferrals import is_passing
from pipeline.errors import (
    CircuitOpenError,
    LeaseLostError,
    PipelineError,
    RetriesExhaustedError,
    VendorAuthError,
    VendorError,
)
from pipeline.redis_client import redis_for
from pipeline.resilience.guard import vendor_guard
from pipeline.resilience.lease import Lease, renewed
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.vendors.erp import (
    ErpClient,
    ErpDatabaseMissingError,
    ErpFieldRejectedError,
    erp_client,
)
from workers.app import app
from workers.resilient_task import ResilientTask, RunTask

log = structlog.get_logger(__name__)
LEASE_RETRY_S = 5.0


def partner_vals(tenant_id: int, company: Any, emails: list[str]) -> dict[str, Any]:
    settings = get_settings()
    vals: dict[str, Any] = (
        dict(settings.export_defaults) if settings.odoo_export_set_defaults else {}
    )
    vals.update(
        {
            "name": company.name or company.domain,
            "ref": f"pipeline:{tenant_id}:{company.id}",
            "is_company": True,
        }
    )
    if company.domain:
        vals["website"] = f"https://{company.domain}"
    if emails:
        vals["email"] = emails[0]
    return vals


def export_one(
    client: ErpClient, policy: RetryPolicy, vals: dict[str, Any], stripped: set[str]
) -> list[str]:
    """Write one partner; the reasons it earned (empty: written as it was).

    `stripped` is what this export already had to strip: later records leave those fields
    out from the start instead of meeting the same refusal (and it grows when they meet a
    new one).
    """
    strippable = [f for f in get_settings().export_strippable_fields if f in vals]
    if not stripped.intersection(strippable):
        try:
            policy.call(upsert_partner, client, vals)
            return []
        except ErpFieldRejectedError as refused:
            if refused.field not in strippable:
                raise
        stripped.update(strippable)
    policy.call(upsert_partner, client, {k: v for k, v in vals.items() if k not in strippable})
    return [f"EXPORT_FIELDS_STRIPPED:{'+'.join(strippable)}"]


def upsert_partner(client: ErpClient, vals: dict[str, Any]) -> int:
    """Update the partner with our `ref`, else create it; the partner's id.

    A create whose answer was lost (a read timeout: the ERP may have created it) is
    confirmed by looking the ref up again before anything else happens to it: a partner the
    ERP wrote is never reported failed, and the retry policy sees only what really failed.
    """
    existing = client.find_partner(vals["ref"])
    if existing is None:
        try:
            return client.create_partner(vals)
        except VendorError as lost:
            if not lost.maybe_applied:
                raise
            return _confirm_created(client, vals["ref"], lost)
    client.write_partner(existing, vals)
    return existing


def _confirm_created(client: ErpClient, ref: str, lost: VendorError) -> int:
    """The id of the partner a lost create made, or `lost` raised if it made none (or the
    ERP cannot say: the retry finds it by ref then, so it is never created twice)."""
    try:
        created = client.find_partner(ref)
    except VendorError as exc:
        log.info("export.create_unconfirmed", error_code=lost.code, lookup_error=exc.code)
        raise lost from None
    if created is None:
        raise lost
    log.info("export.lost_answer_confirmed", error_code=lost.code)
    return created


def disables_export(exc: PipelineError) -> bool:
    """The ERP as a whole cannot take writes now — at start or mid-run alike: unreachable
    past the retry policy, its breaker open, the login refused, the database missing, or
    no usable credential. Anything else concerns one record."""
    if not isinstance(exc, VendorError):
        return True  # no credential, or one that cannot be decrypted
    return exc.retryable or isinstance(
        exc,
        VendorAuthError | ErpDatabaseMissingError | CircuitOpenError | RetriesExhaustedError,
    )


@app.task(
    base=RunTask,
    bind=True,
    ignore_result=True,
    autoretry_for=(),
    name="tasks.export.export_run",
)
def export_run(self: ResilientTask, run_id: str) -> int:
    view = runs.get_run(uuid.UUID(run_id))
    if view is None:
        return 0
    tenant = view.run.tenant_id
    # Busy: back within a third of a lease's TTL at most, so a dead holder's lease (which
    # lapses within one TTL) is taken soon after it frees, not a fixed interval later.
    come_back_s = min(LEASE_RETRY_S, get_settings().lease_ttl_s / 3)
    with tenant_lease(tenant) as lease:
        if lease is None:  # another export for this tenant is writing: come back, never race it
            log.info("export.waits_for_lease", run_id=run_id)
            export_run.apply_async((run_id,), countdown=come_back_s)
            return 0
        try:
            return _export(self.policy, run_id, tenant, view.items, lease)
        except LeaseLostError as lost:  # someone may hold it now: what is left, later
            log.warning("export.lease_lost", run_id=run_id, reason=lost.details.get("reason"))
            export_run.apply_async((run_id,), countdown=come_back_s)
            return 0


def _export(
    policy: RetryPolicy, run_id: str, tenant: int, items: list[Any], lease: Lease | Unleased
) -> int:
    open_items = [i for i in items if i.status not in FINISHED_ITEM_STATUSES]
    if not open_items:  # a repeated delivery of a finished export: nothing to write
        return 0
    companies = companies_by_id(tenant, [int(i.item_key.split(":")[1]) for i in open_items])
    runs.mark_running(uuid.UUID(run_id))
    guard = vendor_guard()
    try:
        client = erp_client(tenant, lambda fn: guard.call(tenant, "erp", fn, run_id=run_id))
        policy.call(client.authenticate)
    except PipelineError as exc:
        return _disable(run_id, open_items, exc)
    stripped: set[str] = set()
    for position, item in enumerate(open_items):
        company_id = int(item.item_key.split(":")[1])
        company = companies.get(company_id)
        if company is None:  # deleted since the enrichment: nothing to export
            runs.finish_item(item.id, ItemStatus.FAILED, ["SOURCE_MISSING:company"])
            continue
        emails = [c.email for c in contacts_of(company_id) if c.email_status == "valid"]
        lease.check()  # never write beside another export of this tenant
        try:
            reasons = export_one(client, policy, partner_vals(tenant, company, emails), stripped)
        except ErpFieldRejectedError as exc:
            runs.finish_item(item.id, ItemStatus.FAILED, [f"EXPORT_REJECTED:{exc.field}"])
            continue
        except VendorError as exc:
            if disables_export(exc):
                return _disable(run_id, open_items[position:], exc)
            runs.finish_item(item.id, ItemStatus.FAILED, [f"EXPORT_FAILED:{exc.code}"])
            continue
        status = ItemStatus.DEGRADED if reasons else ItemStatus.SUCCEEDED
        runs.finish_item(item.id, status, reasons, deferred={})  # written: nothing waits
    return len(open_items)


class Unleased:
    """Stands in for the lease when Redis could not be asked: nothing to lose, nothing to
    check."""

    lost = False

    def check(self) -> None:
        return None


@contextmanager
def tenant_lease(tenant_id: int) -> Iterator[Lease | Unleased | None]:
    """One export per tenant at a time: two writing at once could both miss a partner in
    `find_partner` and both create it. Yields the held lease (check it before each write:
    `LeaseLostError` once it is lost), or None while another export holds it.

    The lease lives `LEASE_TTL_S` and a heartbeat renews it (`pipeline.resilience.lease`), so
    a killed worker's lease frees itself within seconds, not after `TASK_TIME_LIMIT_S`.

    If Redis is unreachable when acquiring, the export goes on unleased (`Unleased`,
    logged): Redis down must not stop exports, and the writes themselves stay safe to
    repeat (a partner is found by `ref` before it is created). The risk taken is a
    duplicate partner only if two exports of one tenant run in that same outage and both
    miss the same partner at once; stopping every export for the outage was judged worse.
    """
    settings = get_settings()
    lease = Lease(
        redis_for(settings.redis_url),
        f"{settings.redis_key_prefix}:lease:{{{tenant_id}}}:erp",
        ttl_s=settings.lease_ttl_s,
    )
    try:
        taken = lease.acquire()
    except redis.RedisError as exc:
        log.warning("export.lease_unavailable", error=type(exc).__name__)
        yield Unleased()
        return
    if not taken:
        yield None
        return
    with renewed(lease):
        yield lease


def _disable(run_id: str, items: list[Any], exc: PipelineError) -> int:
    reason = f"EXPORT_DISABLED:{exc.code}"
    log.warning("export.disabled", run_id=run_id, error_code=exc.code)
    runs.disable_export(uuid.UUID(run_id), exc.message)
    # An ERP that is down passes: the rest waits for it (healing). A refused login or a
    # missing database needs a person.
    passing = isinstance(exc, VendorError) and is_passing(exc)
    deferred = {"erp": reason} if passing else None
    for item in items:
        runs.finish_item(item.id, ItemStatus.DEGRADED, [reason], deferred=deferred)
    return 0
