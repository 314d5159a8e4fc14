"""CRM sync: push the contacts an enrichment run found into the tenant's CRM, in batches.

One task per sync run (queue `critical`), walking its open items (one per contact). Every
write carries an idempotency key derived from the source run and the contact, so a retried
or redelivered task — even one whose worker was killed mid-batch — never creates a
duplicate; items already recorded are skipped. A batch that fails for some records keeps
the rest and retries the failed ones one by one (recovered items keep `last_error_code`
`BATCH_REJECTED`). Requests stay under the tenant's rate (a Redis token bucket shared by
all workers). `AUTH_REQUIRED` stops the tenant's sync: a person must store a credential.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from pipeline import runs
from pipeline.companies import contacts_by_id
from pipeline.crm_tokens import AuthRequiredError
from pipeline.db.models import ItemStatus
from pipeline.errors import VendorError
from pipeline.redis_client import redis_for
from pipeline.resilience.guard import vendor_guard
from pipeline.resilience.rate_limit import TenantRateLimiter
from pipeline.settings import get_settings
from pipeline.vendors.crm import CrmClient
from workers.app import app
from workers.resilient_task import ResilientTask, RunTask

log = structlog.get_logger(__name__)
RECOVERED = "BATCH_REJECTED"


def idempotency_key(source_run_id: Any, contact_id: int) -> str:
    return f"{source_run_id}:contact:{contact_id}"


@app.task(
    base=RunTask,
    bind=True,
    ignore_result=True,
    autoretry_for=(),
    name="tasks.crm_sync.sync_run",
)
def sync_run(self: ResilientTask, run_id: str) -> int:
    view = runs.get_run(uuid.UUID(run_id))
    if view is None:
        return 0
    settings, tenant = get_settings(), view.run.tenant_id
    open_items = [i for i in view.items if i.status not in runs.TERMINAL]
    contacts = contacts_by_id(tenant, [int(i.item_key.split(":")[1]) for i in open_items])
    client = CrmClient(settings)
    limiter = TenantRateLimiter(
        redis_for(settings.redis_url),
        prefix=settings.redis_key_prefix,
        vendor="crm",
        rate_per_s=settings.crm_rate_per_s,
        burst=settings.crm_burst,
    )

    def write(request: Any) -> Any:
        limiter.take(tenant)
        return self.policy.call(lambda: vendor_guard().call(tenant, "crm", request, run_id=run_id))

    runs.mark_running(uuid.UUID(run_id))
    size = settings.crm_batch_size
    for start in range(0, len(open_items), size):
        batch = open_items[start : start + size]
        records = [_record(tenant, view.run.parent_run_id, item, contacts) for item in batch]
        try:
            results = write(lambda records=records: client.upsert_batch(tenant, records))
        except VendorError as exc:
            return _stop(open_items[start:], exc)
        by_key = {r.get("idempotency_key"): r for r in results}
        for item, record in zip(batch, records, strict=True):
            if by_key.get(record["idempotency_key"], {}).get("ok"):
                runs.finish_item(item.id, ItemStatus.SUCCEEDED)
                continue
            single = {k: v for k, v in record.items() if k != "idempotency_key"}
            try:
                write(
                    lambda single=single, key=record["idempotency_key"]: client.upsert_contact(
                        tenant, single, idempotency_key=key
                    )
                )
            except AuthRequiredError as exc:
                return _stop(open_items[open_items.index(item) :], exc)
            except VendorError as exc:
                runs.finish_item(item.id, ItemStatus.FAILED, [f"CRM_REJECTED:{exc.code}"])
                continue
            runs.record_item_error(item.id, RECOVERED)
            runs.finish_item(item.id, ItemStatus.SUCCEEDED)
    return len(open_items)


def _record(tenant: int, source_run_id: Any, item: Any, contacts: dict[int, Any]) -> dict[str, Any]:
    contact_id = int(item.item_key.split(":")[1])
    contact, company_name = contacts[contact_id]
    return {
        "idempotency_key": idempotency_key(source_run_id, contact_id),
        "external_id": f"pipeline:{tenant}:{contact_id}",
        "email": contact.email,
        "name": contact.name,
        "company": company_name or "",
    }


def _stop(items: list[Any], exc: VendorError) -> int:
    """The CRM cannot take more now (credentials refused, or down past the retry policy)."""
    reason = (
        "AUTH_REQUIRED" if isinstance(exc, AuthRequiredError) else f"CRM_UNAVAILABLE:{exc.code}"
    )
    log.warning("crm_sync.stopped", reason=reason)
    for item in items:
        runs.finish_item(item.id, ItemStatus.FAILED, [reason])
    return 0
