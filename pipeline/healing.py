"""Healing: deferred work is redone once its vendor is back.

An item degraded by a vendor condition that passes (`pipeline.deferrals`) waits for that
(tenant, vendor). Each reconciler pass asks, for every pair with work due:

- is the vendor back? A closed breaker says yes (it never opened, or closed on traffic). An
  open one whose cool-off is over gets a probe — one cheap request through the breaker as
  its half-open call (`VendorClient.probe`) — which closes it or opens it for another
  cool-off. Breakers nobody calls any more are probed too, so an idle tenant's breaker does
  not stay open (and alerting) after its vendor came back;
- then its items redo only what is missing: an enrichment item the steps of that vendor
  (contact lookup, email verification, crawl...) from what is stored about it; a CRM sync
  or export item its write, through its run's task. Each item is reopened first — its run
  opens again and closes, with recomputed counts and status, when the heal is done — and
  its old reasons go to its history. When its run closes again, the stages after it get
  what changed (`pipeline.stages`).

Bounded: a deferral older than `HEAL_WINDOW_S`, or healed `HEAL_MAX_ATTEMPTS` times in
vain, expires (the item stays degraded, reasons and all); tries are at least
`HEAL_BACKOFF_S` apart, doubling; `HEALING_OFF` switches pairs off.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from pipeline import companies, deferrals, runs
from pipeline.breakers.contract import CLOSED
from pipeline.breakers.inspection import inspect_breakers
from pipeline.db.models import Deferral, ItemStatus, RunKind, utcnow
from pipeline.enrichment_rules import heal_plan
from pipeline.errors import PipelineError
from pipeline.reopening import reopen_items
from pipeline.settings import Settings

log = structlog.get_logger(__name__)
PROBES_PER_PASS = 50  # idle open breakers probed per pass; the next pass takes the rest
HEALABLE = (ItemStatus.DEGRADED, ItemStatus.FAILED, ItemStatus.DEAD)


class HealDispatch(Protocol):
    def heal_steps(self, steps: list[str], ctx: dict[str, Any]) -> None:
        """Send an enrichment item's missing steps with the context rebuilt for them."""

    def resend_run(self, kind: str, run_id: uuid.UUID) -> None:
        """Send a run's task (it works through the run's open items)."""


# (tenant, vendor) -> whether the vendor answers now; raises nothing.
VendorCheck = Callable[[int, str], bool]


@dataclass
class HealReport:
    probed: int = 0  # breakers asked with a probe (idle ones and ones with work waiting)
    healing: Counter[str] = field(default_factory=Counter)  # items sent to heal, by vendor
    expired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"probed": self.probed, "healing": dict(self.healing), "expired": self.expired}


class Healer:
    def __init__(
        self,
        settings: Settings,
        dispatch: HealDispatch,
        *,
        vendor_back: VendorCheck,
        vendors: Iterable[str],
    ) -> None:
        self.settings, self.dispatch, self.vendor_back = settings, dispatch, vendor_back
        self.vendors = tuple(vendors)

    def run(self, now: datetime | None = None, *, tenant_id: int | None = None) -> HealReport:
        now = now or utcnow()
        report = HealReport()
        report.expired = deferrals.expire(
            now,
            window_s=self.settings.heal_window_s,
            max_attempts=self.settings.heal_max_attempts,
        )
        deferrals.release_stale(now)
        asked: set[tuple[int, str]] = set()
        for tenant, vendor in deferrals.due(now, tenant_id=tenant_id):
            if not self.settings.healing_on(tenant, vendor):
                continue
            asked.add((tenant, vendor))
            if not self.vendor_back(tenant, vendor):
                continue
            claimed = deferrals.claim(tenant, vendor, now, backoff_s=self.settings.heal_backoff_s)
            self._heal(claimed)
            report.healing[vendor] += len(claimed)
        report.probed = len(asked) + self._probe_idle(now, asked, tenant_id)
        if report.healing or report.expired:
            log.info("healing.pass", **report.as_dict())
        return report

    def _probe_idle(self, now: datetime, asked: set[tuple[int, str]], tenant: int | None) -> int:
        """Breakers left open with nobody calling: probe those past their cool-off."""
        try:
            stuck = [
                b
                for b in inspect_breakers(tenant, vendors=self.vendors)
                if b.state != CLOSED
                and (b.tenant_id, b.vendor) not in asked
                and (b.next_probe_at is None or b.next_probe_at <= now)
            ][:PROBES_PER_PASS]
        except Exception as exc:  # Redis unreadable: nothing to probe this pass
            log.warning("healing.breakers_unreadable", error=type(exc).__name__)
            return 0
        for breaker in stuck:
            self.vendor_back(breaker.tenant_id, breaker.vendor)
        return len(stuck)

    def _heal(self, claimed: list[Deferral]) -> None:
        by_run: dict[tuple[str, uuid.UUID], dict[int, list[str]]] = defaultdict(dict)
        for row in claimed:
            by_run[(row.kind, row.run_id)].setdefault(row.item_id, []).append(row.vendor)
        for (kind, run_id), items in by_run.items():
            try:
                self._heal_run(kind, run_id, items)
            except PipelineError as exc:  # one run's trouble must not stop the others
                log.error("healing.failed", run_id=str(run_id), error=exc.code)

    def _heal_run(self, kind: str, run_id: uuid.UUID, items: dict[int, list[str]]) -> None:
        view = runs.get_run(run_id)
        if view is None:
            return
        if kind != RunKind.ENRICHMENT:
            vendors = sorted({v for found in items.values() for v in found})
            reopened = reopen_items(
                run_id, list(items), statuses=HEALABLE, event="healing", note={"vendors": vendors}
            )
            if reopened:
                if kind == RunKind.EXPORT:
                    runs.enable_export(run_id)
                self.dispatch.resend_run(kind, run_id)
            return
        stored = {item.id: item for item in view.items}
        waiting = deferrals.waiting_of(list(items))
        for item_id, vendors in items.items():
            item = stored.get(item_id)
            if item is None:
                continue
            steps, kept = heal_plan(vendors, _reasons(item.degraded_reasons))
            if not reopen_items(
                run_id,
                [item_id],
                to=ItemStatus.QUEUED,
                statuses=HEALABLE,
                event="healing",
                note={"vendors": sorted(vendors)},
            ):
                continue  # it moved meanwhile (another heal, a replay): leave it be
            ctx = heal_context(view.run, item.id, item.item_key, kept, vendors)
            # what it still waits for, from vendors not back yet, keeps waiting
            ctx["deferred"] = {
                v: reason for v, reason in waiting.get(item_id, {}).items() if v not in vendors
            }
            self.dispatch.heal_steps(steps, ctx)


def heal_context(
    run: Any, item_id: int, item_key: str, reasons: list[str], vendors: Iterable[str]
) -> dict[str, Any]:
    """The step context of an enrichment item being healed, rebuilt from what is stored:
    its company, its run's options, the reasons that stand, and — when the company has
    contacts already (so no lookup will run) — its contacts, with emails whose
    verification was deferred made unverified again so they are verified now."""
    company_id = int(item_key.split(":", 1)[1])
    company = companies.companies_by_id(run.tenant_id, [company_id]).get(company_id)
    stored = companies.contacts_of(company_id) if company else []
    ctx: dict[str, Any] = {
        "run_id": str(run.id),
        "item_id": item_id,
        "tenant_id": run.tenant_id,
        "company": company.as_dict()
        if company
        else {"id": company_id, "name": None, "domain": None},
        "had_contacts": bool(stored),
        "options": run.options,
        "reasons": reasons,
        "healing": sorted(vendors),
    }
    if stored:
        reverify = "zerobounce" in vendors
        ctx["contacts"] = [
            {
                "name": c.name,
                "title": c.title,
                "email": c.email,
                "source": c.source,
                "email_status": None
                if reverify and c.email_status in (None, "unknown")
                else c.email_status,
            }
            for c in stored
        ]
    return ctx


def _reasons(joined: str) -> list[str]:
    return [r for r in joined.split(",") if r]


def vendor_back(tenant_id: int, vendor: str) -> bool:
    """Whether `vendor` answers `tenant_id` now: its breaker is closed, or a probe sent
    through it (its half-open call, once the cool-off is over) succeeds and closes it."""
    from pipeline.breakers import breaker_for
    from pipeline.resilience.guard import vendor_guard
    from pipeline.vendors import registry

    try:
        if breaker_for(tenant_id, vendor).current_state == CLOSED:
            return True
        vendor_guard().call(tenant_id, vendor, lambda: registry.probe(vendor, tenant_id))
    except PipelineError as exc:  # still down, still cooling off, or no credential to ask with
        log.info("healing.vendor_not_back", tenant_id=tenant_id, vendor=vendor, why=exc.code)
        return False
    except Exception as exc:  # Redis unreadable, anything else: not known to be back
        log.warning("healing.probe_failed", vendor=vendor, error=type(exc).__name__)
        return False
    log.info("healing.vendor_back", tenant_id=tenant_id, vendor=vendor)
    return True
