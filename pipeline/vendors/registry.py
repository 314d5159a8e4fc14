"""The process's vendor clients, built once from settings (rebuilt after a fork)."""

from __future__ import annotations

from functools import lru_cache

from pipeline.settings import get_settings
from pipeline.vendors.contacts import ApifyLinkedinClient, ContactsClient, LushaClient
from pipeline.vendors.crawler import CrawlerClient
from pipeline.vendors.crm import CrmClient
from pipeline.vendors.erp import erp_client
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


def probe(vendor: str, tenant_id: int) -> None:
    """One cheap request to `vendor` as `tenant_id` uses it (unguarded: the caller puts it
    through the tenant's breaker). Raises what the vendor's failure raises."""
    if vendor == "erp":
        erp_client(tenant_id, lambda fn: fn()).probe()
        return
    clients = {"crawler": crawler, "search": search, "zerobounce": zerobounce, "crm": crm}
    if vendor in clients:
        clients[vendor]().probe(tenant_id)
    elif vendor in ("apify_linkedin", "lusha"):
        contacts(vendor).probe(tenant_id)
    else:
        raise KeyError(f"no probe for vendor {vendor!r}")


def forget_clients() -> None:
    """Drop pooled connections inherited across a fork."""
    for builder in (crawler, search, contacts, zerobounce, crm):
        builder.cache_clear()
