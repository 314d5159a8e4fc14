"""Email verification (ZeroBounce-like)."""

from __future__ import annotations

from pipeline.vendors.base import VendorClient


class ZeroBounceClient(VendorClient):
    vendor = "zerobounce"

    def verify(self, tenant_id: int, emails: list[str]) -> dict[str, str]:
        """email → valid / invalid / catch-all."""
        answer = self.post(tenant_id, "verify", {"emails": emails})
        return {r["email"].lower(): r["status"] for r in answer.get("results", [])}
