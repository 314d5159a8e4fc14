"""Site crawler: fetches a company's site and says how much text it found."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.vendors.base import VendorClient

THIN_TEXT_LENGTH = 200  # below this, a crawl tells us too little to describe the company


@dataclass(frozen=True)
class Crawl:
    domain: str
    pages: int
    text_length: int

    @property
    def thin(self) -> bool:
        return self.text_length < THIN_TEXT_LENGTH


class CrawlerClient(VendorClient):
    vendor = "crawler"

    def crawl(self, tenant_id: int, domain: str) -> Crawl:
        answer = self.get(tenant_id, "crawl", domain=domain)
        return Crawl(domain, len(answer.get("pages", [])), int(answer.get("text_length", 0)))
