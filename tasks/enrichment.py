"""Enrichment: for each company, a Celery chain of steps — the spec's fallback chain.

    crawl_site → search_web → find_contacts(primary) → [find_contacts(fallback)]
               → verify_emails → record_item

The precondition (a company needs a domain or a name) is checked when the run starts: an
item that fails it is recorded there and then, with no chain to send.

Each step, as it starts, records on its item which step it is and the context it was given
(`pipeline.progress.mark_step`): that checkpoint is where the reconciler re-drives an item
whose message was lost (`resume_chain`), and a step for an item that is finished or does
not exist stops there, calling no vendor.

Each step takes and returns a small context (ids, what was found, reasons). A step whose
vendor fails for good does not stop the chain: it writes down why (`CRAWL_ERROR`,
`CIRCUIT_OPEN:<vendor>`, ...) and passes the context on; the next steps decide from the
context whether a fallback is due. The last step records the item and, when it was the
run's last, closes the run (`pipeline.runs.finish_item`) — a latch on durable item
states instead of a chord, whose callback never runs if one header task is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import structlog
from celery import Signature, chain
from celery.exceptions import Reject

from pipeline import companies, deferrals, progress, runs
from pipeline.db.engine import session_scope
from pipeline.db.models import ItemStatus
from pipeline.deferrals import is_passing
from pipeline.enrichment_rules import (
    EMPTY_COMPANY,
    Context,
    annotate,
    contact_fallback_possible,
    contact_vendor,
    defer,
    item_status,
    precondition,
    reasons_for,
    search_query,
    step_context,
    wants_search,
)
from pipeline.errors import InputError, VendorError, error_code
from pipeline.vendors import registry as vendors
from workers.app import app
from workers.resilient_task import ResilientTask, RunTask, is_broker_outage

log = structlog.get_logger(__name__)
T = TypeVar("T")


class EnrichmentStep(ResilientTask):
    """A step that, once its vendor has failed for good, annotates the context and goes on.

    Results travel in the chain's messages; nothing reads a result backend, so none is
    written (`ignore_result`)."""

    ignore_result = True

    def begin(self, ctx: Any = None, *args: Any, **kwargs: Any) -> bool:
        """Mark the item's progress at this step (the checkpoint a re-drive resumes from);
        refuse a step whose item is finished or does not exist, and dead-letter a message
        that is no step context at all (`Reject`: there is nothing to run it on)."""
        step = step_name(self.name, kwargs.get("role"))
        try:
            item, run, tenant = int(ctx["item_id"]), uuid.UUID(str(ctx["run_id"])), ctx["tenant_id"]
            if not isinstance(tenant, int):
                raise TypeError("tenant_id")
        except (TypeError, KeyError, ValueError):
            raise Reject(InputError(f"{step}: not a step context"), requeue=False) from None
        if not self.works_on(ctx, **kwargs):
            return True  # it calls no vendor and writes nothing: no gate, no mark needed
        generation = ctx.get("generation")
        if progress.mark_step(item, run, tenant, step, ctx, generation=generation):
            return True
        log.warning(
            "step.refused",
            step=step,
            item_id=item,
            generation=generation,
            why="item finished, not found, or superseded by a newer copy of its work",
        )
        return False

    def works_on(self, ctx: Context, **kwargs: Any) -> bool:
        """Whether this step will call a vendor or write for `ctx` (each step says; the
        decisions are `pipeline.enrichment_rules`'). A step that will not — no search
        needed, no contact vendor due — passes the context on unmarked: a re-drive then
        resumes from the step before it, which is as good."""
        return True

    def give_up(self, exc: VendorError, ctx: Context, *args: Any, **kwargs: Any) -> Context:
        """Write down why, and go on; a vendor condition that passes also defers the work
        to that vendor, to be redone once it is back (`pipeline.healing`)."""
        reasons = reasons_for(exc)
        for reason in reasons:
            ctx = annotate(ctx, reason)
        if is_passing(exc):
            ctx = defer(ctx, exc.vendor, reasons[-1])
        return ctx

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """A step failed with something no reason covers (a bug, the database gone for good):
        the item is recorded `dead` with `STEP_ERROR:<code>` and the calls it made, so the run
        still finishes and nothing is silently lost."""
        ctx = args[0] if args and isinstance(args[0], dict) else None
        if ctx is None or "item_id" not in ctx:
            return
        if is_broker_outage(exc):  # its next step could not be sent: left for the reconciler
            log.warning("step.not_continued", item_id=ctx["item_id"], why="broker unreachable")
            return
        code = error_code(exc)
        try:
            fence = (uuid.UUID(str(ctx["run_id"])), ctx["tenant_id"], ctx.get("generation"))
            with session_scope() as session:
                run_id = runs.mark_item_finished(
                    ctx["item_id"],
                    ItemStatus.DEAD,
                    [*ctx["reasons"], f"STEP_ERROR:{code}"],
                    session=session,
                    fence=fence,  # an old copy of the work dying leaves the new one be
                )
                if run_id is not None:
                    runs.record_vendor_calls(ctx.get("calls", []), session=session)
                    runs.count_item_done(run_id, session=session)
        except Exception as error:  # the database itself is gone: the DLQ (issue 5) takes over
            log.error("item.not_recorded_dead", item_id=ctx["item_id"], error=type(error).__name__)

    def ask(self, ctx: Context, vendor: str, request: Callable[[], T]) -> tuple[T, Context]:
        """One guarded vendor call for this item: its answer, and the context with the call's
        stats added. A successful call's stats ride in the context and are written with the
        item (`record_item`), saving a commit per call; a failed one is written at once,
        since the step may be retried or give up."""
        collected: list[dict[str, Any]] = []

        def keep(**call: Any) -> None:
            if call["ok"]:
                collected.append({**call, "run_id": str(call["run_id"])})
            else:
                runs.record_vendor_call(**call)

        answer = self.call_vendor(
            ctx["tenant_id"], vendor, request, run_id=ctx["run_id"], record=keep
        )
        return answer, {**ctx, "calls": [*ctx.get("calls", []), *collected]}


def step_name(task_name: str, role: str | None = None) -> str:
    """A step's name in checkpoints: `crawl_site`, `find_contacts:primary`, ..."""
    short = task_name.rsplit(".", 1)[-1]
    return f"{short}:{role}" if role else short


def enrichment_chain(
    ctx: Context, *, start: str = "crawl_site", only: Collection[str] | None = None
) -> Signature:
    """The steps one company goes through (a step the run's options rule out is left out),
    from `start` on — or `only` the steps named — the first given `ctx`."""
    steps = [crawl_site.s(), search_web.s(), find_contacts.s(role="primary")]
    if contact_fallback_possible(ctx["options"]):
        steps.append(find_contacts.s(role="fallback"))
    steps += [verify_emails.s(), record_item.s()]
    names = [step_name(s.task, s.kwargs.get("role")) for s in steps]
    rest = steps[names.index(start) :] if start in names else steps  # unknown: from the top
    if only is not None:
        rest = [step for step, name in zip(steps, names, strict=True) if name in only]
    return chain(rest[0].clone(args=(ctx,)), *rest[1:])


def heal_chain(steps: Collection[str], ctx: Context) -> None:
    """Send a degraded item's missing steps again (`pipeline.healing.heal_plan`), the item
    reopened and `ctx` rebuilt from what is stored about it."""
    enrichment_chain(ctx, only=steps).apply_async()


def resume_chain(step: str, ctx: Context) -> None:
    """Send an item's work again from `step` with the context that step was given (its
    checkpoint): what the reconciler does for an item whose message was lost."""
    enrichment_chain(ctx, start=step).apply_async()


@app.task(
    base=RunTask,
    bind=True,
    ignore_result=True,
    name="tasks.enrichment.start_run",
    touches=(ItemStatus.PENDING,),
)
def start_run(self: ResilientTask, run_id: str) -> int:
    """Claim the run's pending items and send each its chain (safe to run twice: an item is
    claimed once). An item that fails the precondition is recorded at once, with no chain."""
    run, items = runs.claim_pending_items(uuid.UUID(run_id))
    ids = [int(i.key.split(":", 1)[1]) for i in items if i.key.startswith("company:")]
    known = companies.companies_by_id(run.tenant_id, ids)
    have_contacts = companies.with_contacts(ids)
    for item in items:
        found = item.key.startswith("company:")
        company = known.get(int(item.key.split(":", 1)[1])) if found else None
        ctx = precondition(
            step_context(
                run,
                item.id,
                company.as_dict() if company else EMPTY_COMPANY,
                had_contacts=company is not None and company.id in have_contacts,
                generation=item.generation,
            )
        )
        if ctx.get("stop"):
            runs.finish_item(item.id, item_status(ctx), ctx["reasons"])
        else:
            enrichment_chain(ctx).apply_async()
    runs.mark_running(uuid.UUID(run_id))
    return len(items)


@app.task(base=EnrichmentStep, bind=True, name="tasks.enrichment.crawl_site")
def crawl_site(self: EnrichmentStep, ctx: Context) -> Context:
    if ctx.get("stop"):
        return ctx
    tenant, domain = ctx["tenant_id"], ctx["company"]["domain"]
    if not domain:
        return annotate(ctx, "CRAWL_SKIPPED:no_domain")
    crawl, ctx = self.ask(ctx, "crawler", lambda: vendors.crawler().crawl(tenant, domain))
    ctx = {**ctx, "site_text_length": crawl.text_length}
    return annotate(ctx, "CRAWL_THIN") if crawl.thin else ctx


@app.task(
    base=EnrichmentStep,
    bind=True,
    name="tasks.enrichment.search_web",
    works_on=lambda self, ctx, **_: wants_search(ctx),
)
def search_web(self: EnrichmentStep, ctx: Context) -> Context:
    if not wants_search(ctx):
        return ctx
    tenant, query = ctx["tenant_id"], search_query(ctx)
    results, ctx = self.ask(ctx, "search", lambda: vendors.search().search(tenant, query))
    return {**ctx, "search_results": len(results)}


@app.task(
    base=EnrichmentStep,
    bind=True,
    name="tasks.enrichment.find_contacts",
    works_on=lambda self, ctx, role, **_: contact_vendor(ctx, role) is not None,
)
def find_contacts(self: EnrichmentStep, ctx: Context, role: str) -> Context:
    vendor = contact_vendor(ctx, role)
    if vendor is None:
        return ctx
    tenant, company = ctx["tenant_id"], ctx["company"]
    found, ctx = self.ask(
        ctx,
        vendor,
        lambda: vendors.contacts(vendor).find(
            tenant, domain=company["domain"], name=company["name"]
        ),
    )
    return {**ctx, "contacts": [contact.as_dict() for contact in found]}


@app.task(base=EnrichmentStep, bind=True, name="tasks.enrichment.verify_emails")
def verify_emails(self: EnrichmentStep, ctx: Context) -> Context:
    found = ctx.get("contacts") or []
    emails = [c["email"] for c in found if not c.get("email_status")]
    if ctx.get("stop") or not emails:
        return ctx
    tenant = ctx["tenant_id"]
    statuses, ctx = self.ask(ctx, "zerobounce", lambda: vendors.zerobounce().verify(tenant, emails))
    verified = [
        {**c, "email_status": statuses.get(c["email"], c.get("email_status"))} for c in found
    ]
    return {**ctx, "contacts": verified}


@app.task(
    base=EnrichmentStep,
    bind=True,
    name="tasks.enrichment.record_item",
    works_on=lambda self, ctx, **_: False,  # its own write is the gate (`fence`)
)
def record_item(self: EnrichmentStep, ctx: Context) -> dict[str, Any]:
    """Write what was found and the item's outcome, in one transaction — only for the
    item's current copy of the work, of that run and tenant; the run's last item closes
    the run."""
    status, reasons = item_status(ctx), ctx["reasons"]
    contacts = [
        {**c, "email_status": c.get("email_status") or "unknown"} for c in ctx.get("contacts") or []
    ]
    fence = (uuid.UUID(str(ctx["run_id"])), ctx["tenant_id"], ctx.get("generation"))
    with session_scope() as session:
        run_id = runs.mark_item_finished(
            ctx["item_id"], status, reasons, session=session, fence=fence
        )
        if run_id is None:  # recorded already, or an old copy of the work: nothing to write
            log.info("step.refused", step="record_item", item_id=ctx["item_id"])
            return {"item_id": ctx["item_id"], "status": "already-recorded"}
        deferrals.settle(session, ctx["item_id"], run_id, ctx.get("deferred") or {})
        companies.save_enrichment(
            ctx["tenant_id"],
            ctx["company"]["id"],
            site_text_length=ctx.get("site_text_length"),
            search_results=ctx.get("search_results"),
            contacts=contacts,
            session=session,
        )
        runs.record_vendor_calls(ctx.get("calls", []), session=session)
        closed = runs.count_item_done(run_id, session=session)
    if closed is not None:
        log.info("run.finished", run_id=ctx["run_id"], status=closed.status)
    return {"item_id": ctx["item_id"], "status": status, "reasons": reasons}
