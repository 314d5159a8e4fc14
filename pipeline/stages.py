"""Pipelines of runs: enrichment, then CRM sync, then ERP export — each its own run.

A run enqueued with `then=[...]` starts the next stage when it closes (`runs.when_run_closes`
calls `start_next_stage` once, in the process that closed it, right after the commit).
Every stage works from the first run (the enrichment) and records it as its
`parent_run_id`, and the run just before it as `follows_run_id`. A degraded stage lets the
next one start; a failed one (nothing processed) stops the pipeline and says so on itself.

Why not a Celery canvas: a stage's input is decided by how the stage before it *ended*
(which companies were enriched, whether it failed), known only when its last item closes
— in whichever worker that happens. Chaining at enqueue time would need a chord over all
items, whose counter lives in the result backend and dies with it.

The hand-off is made durable rather than trusted:
- starting a stage is idempotent: at most one run follows another (a unique column), and
  the closed run records `handed_off_at` once its next stage is dealt with;
- `sweep_pipelines` (part of every reconciler pass, `pipeline.reconciler`) finds what a crash or a
  down broker left behind — a closed run never handed off, or a next stage created but
  never sent (`sent_at` unset) — and makes it good. Sending a run's task twice is safe:
  run tasks skip finished items and every write is idempotent.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update

from pipeline import deferrals, runs
from pipeline.companies import contact_ids_of_companies
from pipeline.db.engine import session_scope
from pipeline.db.models import (
    FINISHED_ITEM_STATUSES,
    FINISHED_RUN_STATUSES,
    Run,
    RunKind,
    RunStatus,
    aware,
    utcnow,
)
from pipeline.errors import DependencyUnavailableError, InputError
from pipeline.reopening import reopen_items

log = structlog.get_logger(__name__)


def start_next_stage(run_id: uuid.UUID) -> None:
    """A run closed: start its pipeline's next stage — or, when it closes again after items
    were healed or replayed and its stages exist, give them what changed
    (`feed_followers`). Handing off is recorded last, so a crash before it is made good by
    the sweep."""
    view = runs.get_run(run_id)
    if view is None or view.run.handed_off_at is not None:
        return
    run = view.run
    then: list[str] = list((run.options or {}).get("then") or [])
    if not then:
        return
    if runs.follower_of(run.id) is not None:  # it closed again: its stages exist already
        if run.kind == RunKind.ENRICHMENT:
            feed_followers(view)
        runs.mark_handed_off(run.id)  # after the feed: a lost feed is redone by the sweep
        return
    if run.status == RunStatus.FAILED and not deferrals.counts(run.id).get("waiting"):
        # failed, and not for a vendor that will come back (healing): the pipeline stops
        if runs.mark_handed_off(run.id):
            _note(run, f"PIPELINE_STOPPED:{run.kind}_failed")
        return
    first = run.parent_run_id or run.id
    from pipeline.enqueue import enqueue_crm_sync, enqueue_export

    starters: dict[str, Any] = {"crm_sync": enqueue_crm_sync, "export": enqueue_export}
    skipped: list[str] = []
    while then:
        stage, then = then[0], then[1:]
        try:
            started = starters[stage](run.tenant_id, run_id=first, then=then, follows=run.id)
        except InputError as exc:  # nothing for this stage to do: go on to the next
            log.info("pipeline.stage_skipped", stage=stage, why=exc.message)
            skipped.append(f"STAGE_SKIPPED:{stage}")
            continue
        log.info("pipeline.stage_started", stage=stage, run_id=str(started))
        break
    if runs.mark_handed_off(run.id):
        for reason in skipped:
            _note(run, reason)


def feed_followers(source: runs.RunView) -> int:
    """Top up the stages after an enrichment run that closed again: each gets items for what
    it lacks (contacts found, companies processed since) and re-does the companies that
    healed after it wrote them (an export carries the verified email); each stage fed is
    reopened and sent. A stage the pipeline skipped for want of work (no contacts to sync,
    say) starts now if it has some — unless a failed stage stopped the pipeline.
    Idempotent: what a stage has is not added twice. Returns the stages fed or started."""
    from pipeline.enqueue import enriched_company_ids, send_run

    company_ids = enriched_company_ids(source)
    healed_at = {item.item_key: item.healed_at for item in source.items if item.healed_at}
    stages = {
        view.run.kind: view for view in map(runs.get_run, runs.stages_of(source.run.id)) if view
    }
    fed = 0
    for kind in (source.run.options or {}).get("then") or []:
        stage = stages.get(kind)
        if stage is None:
            fed += _start_late(source, kind, stopped=any(_stopped(s) for s in stages.values()))
            continue
        if kind == RunKind.CRM_SYNC:
            tenant = source.run.tenant_id
            wanted = [f"contact:{c}" for c in contact_ids_of_companies(tenant, company_ids)]
            stale: list[int] = []
        else:
            wanted = [f"company:{c}" for c in company_ids]
            stale = [
                item.id
                for item in stage.items
                if item.status in FINISHED_ITEM_STATUSES
                and item.item_key in healed_at
                and aware(healed_at[item.item_key]) > aware(item.updated_at)
            ]
        have = {item.item_key for item in stage.items}
        added = runs.add_items(stage.run.id, [key for key in wanted if key not in have])
        reopened = reopen_items(
            stage.run.id, stale, statuses=FINISHED_ITEM_STATUSES, event="source_changed"
        )
        if added or reopened:
            log.info(
                "pipeline.stage_fed", run_id=str(stage.run.id), added=added, reopened=len(reopened)
            )
            cid = stage.run.correlation_id or uuid.uuid4().hex
            send_run(stage.run.kind, stage.run.id, cid, fail_if_unsent=False)
            fed += 1
    return fed


def _start_late(source: runs.RunView, kind: str, *, stopped: bool) -> int:
    """Start a stage the pipeline skipped, now that healing or a replay gave it work."""
    if stopped:
        return 0
    from pipeline.enqueue import enqueue_crm_sync, enqueue_export

    starters: dict[str, Any] = {"crm_sync": enqueue_crm_sync, "export": enqueue_export}
    try:
        started = starters[kind](source.run.tenant_id, run_id=source.run.id)
    except InputError:  # still nothing for it to do
        return 0
    log.info("pipeline.stage_started_late", stage=kind, run_id=str(started))
    return 1


def _stopped(stage: runs.RunView) -> bool:
    """A failed stage that stopped its pipeline (`PIPELINE_STOPPED`)."""
    return stage.run.status == RunStatus.FAILED and "PIPELINE_STOPPED" in (
        stage.run.degraded_reasons or ""
    )


def sweep_pipelines(
    *, now: datetime | None = None, grace_s: float = 30.0, tenant_id: int | None = None
) -> int:
    """Make good the hand-offs a crash or a down broker lost; returns how many it redid.

    Looks only at runs closed (or next stages created) more than `grace_s` ago, so it
    never races the normal after-commit hand-off; all tenants', or one tenant's.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=grace_s)
    tenant = [] if tenant_id is None else [Run.tenant_id == tenant_id]
    with session_scope() as session:
        not_handed_off = [
            run_id
            for run_id, options in session.execute(
                select(Run.id, Run.options).where(
                    Run.status.in_(FINISHED_RUN_STATUSES),
                    Run.handed_off_at.is_(None),
                    Run.finished_at < cutoff,
                    *tenant,
                )
            )
            if (options or {}).get("then")
        ]
        unsent = session.execute(
            select(Run.id, Run.kind, Run.correlation_id).where(
                Run.follows_run_id.is_not(None),
                Run.status == RunStatus.PENDING,
                Run.sent_at.is_(None),
                Run.created_at < cutoff,
                *tenant,
            )
        ).all()
    redone = 0
    for run_id in not_handed_off:
        log.warning("pipeline.handoff_redone", run_id=str(run_id))
        try:
            start_next_stage(run_id)
        except Exception as exc:  # one run's trouble must not stop the sweep
            log.error("pipeline.handoff_failed", run_id=str(run_id), error=type(exc).__name__)
            continue
        redone += 1
    from pipeline.enqueue import send_run

    for run_id, kind, correlation_id in unsent:
        log.warning("pipeline.stage_resent", run_id=str(run_id))
        try:
            send_run(kind, run_id, correlation_id or uuid.uuid4().hex, fail_if_unsent=False)
        except DependencyUnavailableError:
            break  # the broker is still down: the next sweep tries again
        except Exception as exc:  # one run's trouble must not stop the sweep
            log.error("pipeline.resend_failed", run_id=str(run_id), error=type(exc).__name__)
            continue
        redone += 1
    return redone


def _note(run: Run, reason: str) -> None:
    reasons = ",".join(r for r in (run.degraded_reasons, reason) if r)
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run.id).values(degraded_reasons=reasons))
