"""A tenant with what every stage needs: CRM and ERP logins, in the simulator and stored."""

from __future__ import annotations

from pipeline.credentials import put_credential
from pipeline.simulator import Simulator


def ready_tenant(simulator: Simulator, tenant: int) -> None:
    simulator.register_crm_client(tenant, f"c-{tenant}", "crm-secret")
    put_credential(tenant, "crm", {"client_id": f"c-{tenant}", "client_secret": "crm-secret"})
    simulator.register_erp_user(tenant, f"odoo_{tenant}", "admin", "erp-secret")
    put_credential(
        tenant, "erp", {"db": f"odoo_{tenant}", "login": "admin", "password": "erp-secret"}
    )
