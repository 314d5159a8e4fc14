"""`SimulatorAdmin`: the `Simulator`'s control methods, for a simulator in another process.

    admin = SimulatorAdmin("http://127.0.0.1:8900")
    admin.set_fault(vendor="crm", tenant=1, down=True)
    admin.stats()["errors"]["crm"]

Same names, arguments and return values as on `Simulator`, so a demo or benchmark can take
either. Any non-2xx admin answer raises `requests.HTTPError` (with the simulator's message).
"""

from __future__ import annotations

from typing import Any

import requests

from pipeline.simulator.admin_api import CrmClient, ErpUser, TenantRef
from pipeline.simulator.crm import DEFAULT_TOKEN_TTL_S
from pipeline.simulator.faults import Fault, fault_from

DEFAULT_ADMIN_TIMEOUT_S = 5.0


class SimulatorAdmin:
    def __init__(self, url: str, *, timeout: float = DEFAULT_ADMIN_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def set_fault(self, fault: Fault | None = None, /, **fields: Any) -> Fault:
        """As `Simulator.set_fault`: a `Fault`, or its fields."""
        fault = fault_from(fault, fields)
        self._request("POST", "faults", json=fault.model_dump(mode="json"))
        return fault

    def faults(self) -> list[Fault]:
        return [Fault.model_validate(item) for item in self._request("GET", "faults").json()]

    def clear_faults(self) -> None:
        self._request("DELETE", "faults")

    def clear_fault(self, vendor: str, tenant: int | None = None) -> bool:
        """As `Simulator.clear_fault`: False if no such fault was set."""
        params: dict[str, Any] = {"vendor": vendor}
        if tenant is not None:
            params["tenant"] = tenant
        response = self._session.request(
            "DELETE", f"{self.url}/_admin/faults", params=params, timeout=self.timeout
        )
        if response.status_code == 404:
            return False
        if not response.ok:
            raise requests.HTTPError(
                f"simulator admin DELETE faults: {response.status_code} {response.text}",
                response=response,
            )
        return True

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._request("GET", "stats").json()
        return stats

    def reset(self) -> None:
        self._request("POST", "reset")

    def register_crm_client(
        self,
        tenant: int,
        client_id: str,
        client_secret: str,
        *,
        expires_in: int = DEFAULT_TOKEN_TTL_S,
    ) -> None:
        client = CrmClient(
            tenant=tenant, client_id=client_id, client_secret=client_secret, expires_in=expires_in
        )
        self._request("POST", "crm/clients", json=client.model_dump())

    def revoke_crm_tokens(self, tenant: int) -> None:
        self._request("POST", "crm/revoke", json=TenantRef(tenant=tenant).model_dump())

    def crm_contacts(self, tenant: int) -> list[dict[str, Any]]:
        contacts: list[dict[str, Any]] = self._request(
            "GET", "crm/contacts", params={"tenant": tenant}
        ).json()["contacts"]
        return contacts

    def register_erp_user(self, tenant: int, db: str, login: str, password: str) -> int:
        user = ErpUser(tenant=tenant, db=db, login=login, password=password)
        return int(self._request("POST", "erp/users", json=user.model_dump()).json()["uid"])

    def erp_partners(self, tenant: int) -> list[dict[str, Any]]:
        partners: list[dict[str, Any]] = self._request(
            "GET", "erp/partners", params={"tenant": tenant}
        ).json()["partners"]
        return partners

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        response = self._session.request(
            method, f"{self.url}/_admin/{endpoint}", timeout=self.timeout, **kwargs
        )
        if not response.ok:
            raise requests.HTTPError(
                f"simulator admin {method} {endpoint}: {response.status_code} {response.text}",
                response=response,
            )
        return response
