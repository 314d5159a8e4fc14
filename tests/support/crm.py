"""A tenant ready for CRM sync, and what the CRM was sent and asked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pipeline import enqueue_enrichment
from pipeline.companies import contact_ids_of_companies
from pipeline.credentials import put_credential
from pipeline.db.engine import session_scope
from pipeline.db.models import VendorCall
from pipeline.simulator import Simulator
from tests.support.runs import company, finished

SECRET = "crm-secret-value"


def enriched(simulator: Simulator, tenant: int, n: int = 3) -> Any:
    simulator.register_crm_client(tenant, f"client-{tenant}", SECRET)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": SECRET})
    return finished(enqueue_enrichment(tenant, [company(i, tenant) for i in range(n)]))


def external_ids(tenant: int, source: Any) -> list[str]:
    companies = [int(i.item_key.split(":")[1]) for i in source.items]
    return [f"pipeline:{tenant}:{cid}" for cid in contact_ids_of_companies(tenant, companies)]


def crm_calls(run_id: Any) -> list[VendorCall]:
    with session_scope() as session:
        rows = session.scalars(
            select(VendorCall)
            .where(VendorCall.run_id == run_id, VendorCall.vendor == "crm")
            .order_by(VendorCall.at)
        )
        return list(rows)
