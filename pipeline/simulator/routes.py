"""The URL map: which fake vendor answers which (method, path), and under what vendor name.

The vendor name is what faults target and what the stats count by; it is the same name the
product's clients use for breakers and settings (`crawler`, `search`, `crm`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.simulator import vendors
from pipeline.simulator.crm import CrmVendor
from pipeline.simulator.erp import ErpVendor
from pipeline.simulator.messages import Answer, Call


@dataclass(frozen=True)
class Route:
    vendor: str
    answer: Callable[[Call], Answer]


def vendor_routes(crm: CrmVendor, erp: ErpVendor) -> dict[tuple[str, str], Route]:
    return {
        ("GET", "/crawler/crawl"): Route("crawler", vendors.crawl),
        ("POST", "/search/search"): Route("search", vendors.search),
        ("POST", "/apify_linkedin/contacts"): Route(
            "apify_linkedin", vendors.contacts_from("apify_linkedin")
        ),
        ("POST", "/lusha/contacts"): Route("lusha", vendors.contacts_from("lusha")),
        ("POST", "/zerobounce/verify"): Route("zerobounce", vendors.verify),
        ("POST", "/crm/oauth/token"): Route("crm", crm.token),
        ("POST", "/crm/contacts/upsert"): Route("crm", crm.upsert),
        ("POST", "/crm/contacts/batch"): Route("crm", crm.batch),
        ("POST", "/crm/contacts/lookup"): Route("crm", crm.lookup),
        ("POST", "/erp/xmlrpc/2/common"): Route("erp", erp.common),
        ("POST", "/erp/xmlrpc/2/object"): Route("erp", erp.object),
        **{
            ("GET", f"/{vendor}/health"): Route(vendor, vendors.health)
            for vendor in ("crawler", "search", "apify_linkedin", "lusha", "zerobounce", "crm")
        },
    }
