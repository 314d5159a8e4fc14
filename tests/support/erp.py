"""A tenant ready for ERP export."""

from __future__ import annotations

from typing import Any

from pipeline import enqueue_enrichment
from pipeline.credentials import put_credential
from pipeline.simulator import Simulator
from tests.support.runs import company, finished


def enriched(simulator: Simulator, tenant: int, n: int = 3, db: str = "") -> Any:
    """A finished enrichment run of `n` companies, and an ERP login stored for the tenant."""
    database = f"odoo_{tenant}"
    simulator.register_erp_user(tenant, database, "admin", "s3cret-erp")
    put_credential(
        tenant, "erp", {"db": db or database, "login": "admin", "password": "s3cret-erp"}
    )
    return finished(enqueue_enrichment(tenant, [company(i, tenant) for i in range(n)]))
