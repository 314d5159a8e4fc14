"""Contact discovery: Apify-LinkedIn and Lusha answer the same question the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.vendors.base import VendorClient


@dataclass(frozen=True)
class Contact:
    name: str
    title: str
    email: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ContactsClient(VendorClient):
    def find(self, tenant_id: int, *, domain: str | None, name: str | None) -> list[Contact]:
        """The people the vendor knows at the company, one per email address."""
        answer = self.post(tenant_id, "contacts", {"domain": domain or "", "name": name or ""})
        people = {
            c["email"].lower(): Contact(
                c.get("name", ""), c.get("title", ""), c["email"].lower(), self.vendor
            )
            for c in answer.get("contacts", [])
            if c.get("email")
        }
        return list(people.values())


class ApifyLinkedinClient(ContactsClient):
    vendor = "apify_linkedin"


class LushaClient(ContactsClient):
    vendor = "lusha"
