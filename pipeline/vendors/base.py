"""The shared base of every vendor client: a pooled `requests.Session` with our timeouts.

Base URL and API key come from settings (`VENDOR_BASE_URL` / `VENDOR_URLS`,
`VENDOR_API_KEYS`). The API key travels in the Authorization header only — never in a URL,
where it would end up in logs and error messages. The tenant goes in `X-Tenant-Id`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter

from pipeline.errors import raise_for_vendor
from pipeline.settings import Settings


class VendorClient:
    vendor: ClassVar[str]

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.base_url = settings.vendor_url(self.vendor).rstrip("/")
        self.timeout = (settings.http_connect_timeout_s, settings.http_read_timeout_s)
        self._api_key = settings.vendor_api_key(self.vendor) or "unset"
        self.session = session or pooled_session(settings.bulkhead_limit(self.vendor))

    def probe(self, tenant_id: int) -> None:
        """A cheap request that fails exactly when the vendor would fail this tenant now:
        what the reconciler sends through a half-open breaker to learn that a vendor is
        back (`pipeline.healing`). `GET <base>/health` by default; a client whose vendor
        has no such endpoint overrides it with its cheapest read."""
        self.get(tenant_id, "health")

    def get(self, tenant_id: int, path: str, **params: Any) -> Any:
        return self._request("GET", tenant_id, path, params=params)

    def post(self, tenant_id: int, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", tenant_id, path, json=body)

    def _request(self, method: str, tenant_id: int, path: str, **kw: Any) -> Any:
        response = self.session.request(
            method,
            f"{self.base_url}/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self._api_key}", "X-Tenant-Id": str(tenant_id)},
            timeout=self.timeout,
            **kw,
        )
        return raise_for_vendor(response, self.vendor).json()

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.base_url}>"


def pooled_session(pool_size: int) -> requests.Session:
    """Keep-alive connections, as many as calls may be in flight to the vendor."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
