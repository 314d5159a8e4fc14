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
from typing import Any

import structlog

from pipeline import runs
from pipeline.companies import companies_by_id, contacts_of
from pipeline.credentials import get_credential
from pipeline.db.models import ItemStatus
from pipeline.errors import PipelineError, VendorError
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.vendors.erp import ErpClient, ErpFieldRejectedError
from workers.app import app
from workers.resilient_task import ResilientTask, RunTask

log = structlog.get_logger(__name__)


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


def erp_client(tenant_id: int) -> ErpClient:
    settings = get_settings()
    secret = get_credential(tenant_id, "erp").secret
    return ErpClient(
        url=secret.get("url") or f"{settings.vendor_url('erp')}/xmlrpc/2",
        db=secret["db"],
        login=secret["login"],
        password=secret["password"],
        tenant_id=tenant_id,
        timeout=settings.http_read_timeout_s,
    )


def export_one(client: ErpClient, policy: RetryPolicy, vals: dict[str, Any]) -> list[str]:
    """Write one partner; the reasons it earned (empty: written as it was)."""
    try:
        policy.call(upsert_partner, client, vals)
        return []
    except ErpFieldRejectedError as refused:
        strippable = [f for f in get_settings().export_strippable_fields if f in vals]
        if refused.field not in strippable:
            raise
    policy.call(upsert_partner, client, {k: v for k, v in vals.items() if k not in strippable})
    return [f"EXPORT_FIELDS_STRIPPED:{'+'.join(strippable)}"]


def upsert_partner(client: ErpClient, vals: dict[str, Any]) -> int:
    existing = client.find_partner(vals["ref"])
    if existing is None:
        return client.create_partner(vals)
    client.write_partner(existing, vals)
    return existing


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
    tenant, policy = view.run.tenant_id, self.policy
    open_items = [i for i in view.items if i.status not in runs.TERMINAL]
    companies = companies_by_id(tenant, [int(i.item_key.split(":")[1]) for i in open_items])
    runs.mark_running(uuid.UUID(run_id))
    try:
        client = erp_client(tenant)
        policy.call(client.authenticate)
    except PipelineError as exc:  # unreachable, no database, no or unreadable credential
        return _disable(run_id, open_items, exc)
    for position, item in enumerate(open_items):
        company_id = int(item.item_key.split(":")[1])
        company = companies[company_id]
        emails = [c.email for c in contacts_of(company_id) if c.email_status == "valid"]
        try:
            reasons = export_one(client, policy, partner_vals(tenant, company, emails))
        except ErpFieldRejectedError as exc:
            runs.finish_item(item.id, ItemStatus.FAILED, [f"EXPORT_REJECTED:{exc.field}"])
            continue
        except VendorError as exc:
            if exc.retryable or exc.code == "RETRIES_EXHAUSTED":  # the ERP went away mid-run
                return _disable(run_id, open_items[position:], exc)
            runs.finish_item(item.id, ItemStatus.FAILED, [f"EXPORT_FAILED:{exc.code}"])
            continue
        status = ItemStatus.DEGRADED if reasons else ItemStatus.SUCCEEDED
        runs.finish_item(item.id, status, reasons)
    return len(open_items)


def _disable(run_id: str, items: list[Any], exc: PipelineError) -> int:
    reason = f"EXPORT_DISABLED:{exc.code}"
    log.warning("export.disabled", run_id=run_id, error_code=exc.code)
    runs.disable_export(uuid.UUID(run_id), exc.message)
    for item in items:
        runs.finish_item(item.id, ItemStatus.DEGRADED, [reason])
    return 0
