"""Healing: deferred work is redone once its vendor is back.

An item degraded by a vendor condition that passes (`pipeline.deferrals`) waits for that
(tenant, vendor). Each reconciler pass asks, for every pair with work due:

- is the vendor back? One probe — a cheap request (`VendorClient.probe`) through the
  tenant's breaker — tells: a call like any other while the breaker is closed, its
  half-open call once an open one's cool-off is over (closing it, or opening it for
  another cool-off); while it still cools off, no. Breakers nobody calls any more are
  probed too, so an idle tenant's breaker does not stay open (and alerting) after its
  vendor came back;
- then its items redo only what is missing: an enrichment item the steps of that vendor
  (contact lookup, email verification, crawl...) from what is stored about it; a CRM sync
  or export item its write, through its run's task. Only items that still show what was
  deferred are healed (one replayed or dead since has nothing of it left; its deferral is
  dropped). Each item is reopened first, as a new copy of its work — its run
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
from pipeline.enrichment_rules import heal_plan, step_context
from pipeline.reopening import reopen_items
from pipeline.settings import Settings

log = structlog.get_logger(__name__)
PROBES_PER_PASS = 50  # idle open breakers probed per pass; the next pass takes the rest
HEALABLE = (ItemStatus.DEGRADED, ItemStatus.FAILED)


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
        by_run: dict[tuple[str, uuid.UUID], dict[int, dict[str, str]]] = defaultdict(dict)
        for row in claimed:
            by_run[(row.kind, row.run_id)].setdefault(row.item_id, {})[row.vendor] = row.reason
        for (kind, run_id), items in by_run.items():
            try:
                self._heal_run(kind, run_id, items)
            except Exception as exc:  # one run's trouble (a broker refusing) stops no other
                log.error("healing.failed", run_id=str(run_id), error=type(exc).__name__)

    def _heal_run(self, kind: str, run_id: uuid.UUID, items: dict[int, dict[str, str]]) -> None:
        """Reopen the run's items that still show what was deferred — degraded or failed
        with the deferral's reason; an item that ended otherwise since (replayed, died) has
        nothing of it left to heal, and its deferral is dropped — and send their work."""
        view = runs.get_run(run_id)
        if view is None:
            return
        stored = {item.id: item for item in view.items}
        healable: dict[int, dict[str, str]] = {}
        for item_id, deferred in items.items():
            item = stored.get(item_id)
            if item is None or item.status not in HEALABLE:
                continue
            shown = [v for v, reason in deferred.items() if reason in item.degraded_reasons]
            moot = [v for v in deferred if v not in shown]
            if moot:
                deferrals.drop_vendors(item_id, moot)
            if shown:
                healable[item_id] = {v: deferred[v] for v in shown}
        if kind != RunKind.ENRICHMENT:
            vendors = sorted({v for deferred in healable.values() for v in deferred})
            note = {"vendors": vendors}
            if healable and reopen_items(
                run_id, list(healable), statuses=HEALABLE, event="healing", note=note
            ):
                if kind == RunKind.EXPORT:
                    runs.enable_export(run_id)
                self.dispatch.resend_run(kind, run_id)
            return
        waiting = deferrals.waiting_of(list(healable))
        for item_id, deferred in healable.items():
            item = stored[item_id]
            steps, kept = heal_plan(deferred, _reasons(item.degraded_reasons))
            reopened = reopen_items(
                run_id,
                [item_id],
                to=ItemStatus.QUEUED,
                statuses=HEALABLE,
                event="healing",
                note={"vendors": sorted(deferred)},
            )
            if not reopened:
                continue  # it moved meanwhile (another heal, a replay): leave it be
            ctx = heal_context(view.run, item, kept, deferred, reopened[0].generation)
            # what it still waits for, from vendors not back yet, keeps waiting
            ctx["deferred"] = {
                v: reason for v, reason in waiting.get(item_id, {}).items() if v not in deferred
            }
            self.dispatch.heal_steps(steps, ctx)


def heal_context(
    run: Any, item: Any, reasons: list[str], vendors: Iterable[str], generation: int
) -> dict[str, Any]:
    """The step context of an enrichment item being healed, rebuilt from what is stored:
    its company, its run's options, the reasons that stand, and — when the company has
    contacts already (so no lookup will run) — its contacts, with emails whose
    verification was deferred made unverified again so they are verified now."""
    company_id = int(item.item_key.split(":", 1)[1])
    company = companies.companies_by_id(run.tenant_id, [company_id]).get(company_id)
    stored = companies.contacts_of(company_id) if company else []
    found = company.as_dict() if company else {"id": company_id, "name": None, "domain": None}
    ctx = step_context(
        run,
        item.id,
        found,
        had_contacts=bool(stored),
        reasons=reasons,
        generation=generation,
    )
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
