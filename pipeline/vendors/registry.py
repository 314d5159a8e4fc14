"""The process's vendor clients, built once from settings (rebuilt after a fork)."""

from __future__ import annotations

from functools import lru_cache

from pipeline.settings import get_settings
from pipeline.vendors.contacts import ApifyLinkedinClient, ContactsClient, LushaClient
from pipeline.vendors.crawler import CrawlerClient
from pipeline.vendors.crm import CrmClient
from pipeline.vendors.search import SearchClient
from pipeline.vendors.zerobounce import ZeroBounceClient

# Vendors whose calls go through a per-tenant breaker (the ERP's too: its open breaker
# disables the export). What the API lists and lets operators force.
GUARDED_VENDORS = ("crawler", "search", "apify_linkedin", "lusha", "zerobounce", "crm", "erp")


@lru_cache(maxsize=1)
def crawler() -> CrawlerClient:
    return CrawlerClient(get_settings())


@lru_cache(maxsize=1)
def search() -> SearchClient:
    return SearchClient(get_settings())


@lru_cache(maxsize=2)
def contacts(vendor: str) -> ContactsClient:
    kinds = {"apify_linkedin": ApifyLinkedinClient, "lusha": LushaClient}
    return kinds[vendor](get_settings())


@lru_cache(maxsize=1)
def zerobounce() -> ZeroBounceClient:
    return ZeroBounceClient(get_settings())


@lru_cache(maxsize=1)
def crm() -> CrmClient:
    """One per process, so its token store's memory of the last credential read is shared."""
    return CrmClient(get_settings())


def forget_clients() -> None:
    """Drop pooled connections inherited across a fork."""
    for builder in (crawler, search, contacts, zerobounce, crm):
        builder.cache_clear()
