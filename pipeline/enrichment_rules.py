"""The enrichment fallback rules as pure functions over a step's context.

The Celery steps (`tasks/enrichment.py`) call vendors; everything they decide — which
vendor is next, which reason a failure earns, what an item's status is — lives here, where a
unit test can read it against the spec without a worker. Feature flags come from the run's
own `options` (in the context), fixed when the run was enqueued.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.db.models import ItemStatus
from pipeline.errors import CircuitOpenError, VendorError

Context = dict[str, Any]

# The reason a step writes when its vendor failed for good (after retries).
REASON_ON_FAILURE = {
    "crawler": "CRAWL_ERROR",
    "search": "TAVILY_FAIL",
    "apify_linkedin": "APIFY_LINKEDIN_FAIL",
    "lusha": "LUSHA_FAIL",
    "zerobounce": "ZEROBOUNCE_DEFER",
}
DATA_EMPTY = "DATA_EMPTY:no_domain_name"
CRAWL_SHORTFALLS = ("CRAWL_THIN", "CRAWL_ERROR", "CRAWL_SKIPPED:no_domain", "CIRCUIT_OPEN:crawler")


EMPTY_COMPANY: dict[str, Any] = {"id": None, "name": None, "domain": None}


def step_context(
    run: Any,
    item_id: int,
    company: dict[str, Any],
    *,
    had_contacts: bool,
    reasons: Iterable[str] = (),
    generation: int = 0,
) -> Context:
    """What an item's first step is given: ids, the company, the run's options (fixed when
    it was enqueued) and which copy of the item's work this is (`generation`)."""
    return {
        "run_id": str(run.id),
        "item_id": item_id,
        "tenant_id": run.tenant_id,
        "company": company,
        "had_contacts": had_contacts,
        "options": run.options,
        "reasons": list(reasons),
        "generation": generation,
    }


def precondition(ctx: Context) -> Context:
    """No domain and no name: nothing to look for; the item fails with `DATA_EMPTY`."""
    company = ctx["company"]
    if not company["domain"] and not company["name"]:
        return annotate(ctx, DATA_EMPTY, stop=True)
    return ctx


def annotate(ctx: Context, reason: str, *, stop: bool = False) -> Context:
    """A copy of `ctx` with `reason` added (once); `stop` ends the work for this item."""
    reasons = ctx["reasons"] if reason in ctx["reasons"] else [*ctx["reasons"], reason]
    return {**ctx, "reasons": reasons, **({"stop": True} if stop else {})}


CONTACT_VENDORS = ("apify_linkedin", "lusha")


def reasons_for(exc: VendorError) -> list[str]:
    """Why a step gave up. A final failure names its step (`CRAWL_ERROR`,
    `ZEROBOUNCE_DEFER`, ...). An open breaker costs no call and says so,
    `CIRCUIT_OPEN:<vendor>` — for a contact vendor instead of its failure reason (the spec's
    rule), elsewhere beside it, so `ZEROBOUNCE_DEFER` still marks deferred emails."""
    step_reason = REASON_ON_FAILURE.get(exc.vendor, f"{exc.vendor.upper()}_FAIL")
    if not isinstance(exc, CircuitOpenError):
        return [step_reason]
    circuit = f"CIRCUIT_OPEN:{exc.vendor}"
    return [circuit] if exc.vendor in CONTACT_VENDORS else [step_reason, circuit]


def defer(ctx: Context, vendor: str, reason: str) -> Context:
    """A copy of `ctx` noting that `vendor`'s work waits for it to be back (healing)."""
    return {**ctx, "deferred": {**(ctx.get("deferred") or {}), vendor: reason}}


# Healing: which steps hold a vendor's work, and which reasons each step writes.
STEPS_OF_VENDOR = {
    "crawler": ("crawl_site", "search_web"),
    "search": ("search_web",),
    "apify_linkedin": ("find_contacts:primary", "find_contacts:fallback"),
    "lusha": ("find_contacts:primary", "find_contacts:fallback"),
    "zerobounce": ("verify_emails",),
}
REASONS_OF_STEP = {
    "crawl_site": ("CRAWL_ERROR", "CRAWL_THIN", "CIRCUIT_OPEN:crawler"),
    "search_web": ("TAVILY_FAIL", "CIRCUIT_OPEN:search"),
    "find_contacts:primary": (
        "APIFY_LINKEDIN_FAIL",
        "LUSHA_FAIL",
        "CIRCUIT_OPEN:apify_linkedin",
        "CIRCUIT_OPEN:lusha",
    ),
    "verify_emails": ("ZEROBOUNCE_DEFER", "CIRCUIT_OPEN:zerobounce"),
}
STEP_ORDER = (
    "crawl_site",
    "search_web",
    "find_contacts:primary",
    "find_contacts:fallback",
    "verify_emails",
    "record_item",
)


def heal_plan(vendors: Iterable[str], reasons: Iterable[str]) -> tuple[list[str], list[str]]:
    """The steps that redo `vendors`' deferred work (new contacts are always verified, and
    the item recorded), and the item's reasons that stand meanwhile: those of steps not
    redone. A redone step writes its reasons again if it falls short again."""
    wanted = {step for vendor in vendors for step in STEPS_OF_VENDOR.get(vendor, ())}
    steps = [s for s in STEP_ORDER if s in wanted or s in ("verify_emails", "record_item")]
    dropped = {r for step in wanted for r in REASONS_OF_STEP.get(step, ())}
    return steps, [r for r in reasons if r not in dropped]


def crawl_fell_short(ctx: Context) -> bool:
    return any(reason in ctx["reasons"] for reason in CRAWL_SHORTFALLS)


def search_query(ctx: Context) -> str:
    company = ctx["company"]
    return " ".join(part for part in (company["name"], company["domain"]) if part)


def primary_contact_vendor(ctx: Context) -> str:
    return "apify_linkedin" if ctx["options"]["enable_apify_linkedin"] else "lusha"


def wants_search(ctx: Context) -> bool:
    return (
        not ctx.get("stop") and ctx["options"]["enable_tavily_fallback"] and crawl_fell_short(ctx)
    )


def contact_fallback_possible(options: dict[str, Any]) -> bool:
    """Whether a run's options allow a second contact vendor at all."""
    return bool(options["enable_lusha_fallback"]) and bool(options["enable_apify_linkedin"])


def contact_vendor(ctx: Context, role: str) -> str | None:
    """Which contact vendor the `primary` or `fallback` step should ask, if any.

    Contacts are looked for only when the company has none yet and has a domain. The
    fallback (Lusha, when `ENABLE_LUSHA_FALLBACK`) runs only after the primary was asked and
    failed or was refused by its open breaker — i.e. left no contacts in the context.
    """
    if ctx.get("stop") or ctx.get("had_contacts") or not ctx["company"]["domain"]:
        return None
    primary = primary_contact_vendor(ctx)
    if role == "primary":
        return primary
    fallback_on = ctx["options"]["enable_lusha_fallback"]
    if fallback_on and primary != "lusha" and ctx.get("contacts") is None:
        return "lusha"
    return None


def item_status(ctx: Context) -> ItemStatus:
    if DATA_EMPTY in ctx["reasons"]:
        return ItemStatus.FAILED
    return ItemStatus.DEGRADED if ctx["reasons"] else ItemStatus.SUCCEEDED
