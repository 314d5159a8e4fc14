"""The enrichment vendors' fake answers: crawler, search, apify_linkedin, lusha, zerobounce.

Stateless and deterministic: an answer depends only on the request (hashed with sha256,
never Python's per-process `hash`), so the same domain gives the same pages and people in
every run and every process. Each requires a non-empty bearer API key, as the real ones do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.simulator.messages import Answer, Call, Refusal

FIRST_NAMES = ("Jane", "John", "Maria", "Wei", "Aisha", "Lars", "Priya", "Tom", "Yuki", "Omar")
LAST_NAMES = ("Doe", "Smith", "Garcia", "Chen", "Okafor", "Berg", "Patel", "Silva", "Sato", "Khan")
TITLES = ("CTO", "CEO", "VP Sales", "Head of Marketing", "COO", "Procurement Lead", "CFO")

PAGE_TEMPLATES = (
    (
        "",
        "{name} builds software for teams that run on data. Our platform connects your "
        "sales, finance and operations systems so every department works from the same facts. "
        "Trusted by more than four hundred companies across Europe and North America.",
    ),
    (
        "about",
        "About {name}: founded in 2012, {name} employs about 250 people in three "
        "offices. We believe integrations should be boring: reliable, observable and cheap to "
        "run. Our leadership team comes from enterprise software and logistics.",
    ),
    (
        "products",
        "{name} Products: the {name} Sync engine moves records between CRMs and "
        "ERPs in near real time; {name} Insights turns them into dashboards; {name} Guard "
        "watches data quality and alerts owners before a bad record spreads.",
    ),
)


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256(":".join(parts).encode()).digest()[:8], "big")


def company_name(domain: str) -> str:
    """'acme-labs.com' -> 'Acme Labs': what the fake web says the company is called."""
    stem = domain.split(".")[0] if domain else "example"
    return " ".join(word.capitalize() for word in stem.replace("_", "-").split("-") if word)


def _api_key_required(call: Call) -> None:
    if not call.bearer():
        raise Refusal(401, "missing_api_key", "send Authorization: Bearer <api key>")


def _required(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Refusal(400, "bad_request", f"'{name}' is required")
    return value.strip().lower() if name in ("domain", "email") else value.strip()


def crawl(call: Call) -> Answer:
    """GET /crawler/crawl?domain=D: several pages (>= 500 chars), or one thin page (< 100)."""
    _api_key_required(call)
    domain = _required(call.query, "domain")
    name = company_name(domain)
    if call.fault is not None and call.fault.thin:
        pages = [{"url": f"https://{domain}/", "text": f"{name} - coming soon."}]
    else:
        pages = [
            {"url": f"https://{domain}/{slug}", "text": template.format(name=name)}
            for slug, template in PAGE_TEMPLATES
        ]
    text_length = sum(len(page["text"]) for page in pages)
    return Answer.json({"domain": domain, "pages": pages, "text_length": text_length})


def search(call: Call) -> Answer:
    """POST /search/search {"query"}: three results about the query, Tavily-style."""
    _api_key_required(call)
    query = _required(call.json(), "query")
    words = query.split()
    domain = next((word.lower() for word in words if "." in word), "example.com")
    name = company_name(domain)
    results = [
        {
            "url": f"https://{domain}/",
            "title": f"{name} - Official site",
            "content": f"{name} connects sales, finance and operations data. ({query})",
        },
        {
            "url": f"https://news.example.org/{domain.split('.')[0]}-raises-series-b",
            "title": f"{name} raises Series B",
            "content": f"{name} announced new funding to expand its integration platform.",
        },
        {
            "url": f"https://www.linkedin.com/company/{domain.split('.')[0]}",
            "title": f"{name} | LinkedIn",
            "content": f"{name} | Software development | 201-500 employees.",
        },
    ]
    return Answer.json({"results": results})


def _people(source: str, domain: str) -> list[dict[str, str]]:
    """Two or three people at `domain`, the same for the same (source, domain)."""
    count = 2 + _digest(source, domain, "count") % 2
    people = []
    for index in range(count):
        first = FIRST_NAMES[_digest(source, domain, str(index), "first") % len(FIRST_NAMES)]
        last = LAST_NAMES[_digest(source, domain, str(index), "last") % len(LAST_NAMES)]
        title = TITLES[_digest(source, domain, str(index), "title") % len(TITLES)]
        local = f"{first}.{last}".lower()
        people.append({"name": f"{first} {last}", "title": title, "email": f"{local}@{domain}"})
    return people


def contacts_from(source: str) -> Callable[[Call], Answer]:
    """POST /<source>/contacts {"domain", "name"}: people finder answers for one source."""

    def contacts(call: Call) -> Answer:
        _api_key_required(call)
        domain = _required(call.json(), "domain")
        return Answer.json({"contacts": _people(source, domain)})

    contacts.__name__ = f"{source}_contacts"
    return contacts


def email_status(email: str) -> str:
    """Mostly 'valid'; one in ten 'invalid', one in ten 'catch-all'; malformed is 'invalid'."""
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        return "invalid"
    bucket = _digest("zerobounce", email.strip().lower()) % 10
    return {0: "invalid", 1: "catch-all"}.get(bucket, "valid")


def verify(call: Call) -> Answer:
    """POST /zerobounce/verify {"emails": [...]}: one status per email, in order."""
    _api_key_required(call)
    emails = call.json().get("emails")
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise Refusal(400, "bad_request", "'emails' must be a list of strings")
    return Answer.json({"results": [{"email": e, "status": email_status(e)} for e in emails]})


def health(call: Call) -> Answer:
    """GET /<vendor>/health: the cheapest answer a vendor gives (the product's probe). Faults
    apply to it like to any call, so a vendor that is down for a tenant fails it too."""
    return Answer.json({"ok": True})
