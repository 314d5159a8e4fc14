"""Web search (Tavily-like): the fallback when a company's own site says too little."""

from __future__ import annotations

from typing import Any

from pipeline.vendors.base import VendorClient


class SearchClient(VendorClient):
    vendor = "search"

    def search(self, tenant_id: int, query: str) -> list[dict[str, Any]]:
        return list(self.post(tenant_id, "search", {"query": query}).get("results", []))
