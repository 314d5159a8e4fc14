"""Pipelines of runs: enrichment, then CRM sync, then ERP export — each its own run.

A run enqueued with `then=[...]` starts the next stage when it closes (`runs.when_run_closes`
calls `start_next_stage` once, in the process that closed it). Every stage works from the
first run (the enrichment) and records it as its `parent_run_id`. A degraded stage lets the
next one start; a failed one (nothing processed) stops the pipeline and says so on itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import update

from pipeline import runs
from pipeline.db.engine import session_scope
from pipeline.db.models import Run, RunStatus
from pipeline.errors import InputError

log = structlog.get_logger(__name__)


def start_next_stage(run_id: uuid.UUID) -> None:
    view = runs.get_run(run_id)
    if view is None:
        return
    run = view.run
    then: list[str] = list((run.options or {}).get("then") or [])
    if not then:
        return
    if run.status == RunStatus.FAILED:
        _note(run, f"PIPELINE_STOPPED:{run.kind}_failed")
        return
    first = run.parent_run_id or run.id
    from pipeline.enqueue import enqueue_crm_sync, enqueue_export

    starters: dict[str, Any] = {"crm_sync": enqueue_crm_sync, "export": enqueue_export}
    while then:
        stage, then = then[0], then[1:]
        try:
            started = starters[stage](run.tenant_id, run_id=first, then=then)
        except InputError as exc:  # nothing for this stage to do: go on to the next
            log.info("pipeline.stage_skipped", stage=stage, why=exc.message)
            _note(run, f"STAGE_SKIPPED:{stage}")
            continue
        log.info("pipeline.stage_started", stage=stage, run_id=str(started))
        return


def _note(run: Run, reason: str) -> None:
    reasons = ",".join(r for r in (run.degraded_reasons, reason) if r)
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run.id).values(degraded_reasons=reasons))
