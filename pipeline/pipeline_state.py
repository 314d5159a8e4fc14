"""Where a pipeline of runs stands (enrichment → CRM sync → export), read from the run
tables only — what `pipeline enrich --then ... --wait` follows.

A pipeline has *settled* when its last run closed and nothing more will follow it: the run
had no stages left to start (`then` empty), or it handed off (`handed_off_at`) without a
next stage — the pipeline stopped after a failure, or the stages left had nothing to do.
A run that closed but has not yet handed off is not settled: its next stage is on its way
(the worker that closed it starts it; the reconciler makes a lost hand-off good).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from pipeline.db.engine import session_scope
from pipeline.db.models import FINISHED_RUN_STATUSES, Run, RunStatus


@dataclass(frozen=True)
class PipelineState:
    """The pipeline's runs so far, first to last, and whether more can come."""

    runs: list[Run]
    settled: bool

    @property
    def current(self) -> Run:
        return self.runs[-1]

    @property
    def failed(self) -> bool:
        """A run of it ended failed (nothing processed; the pipeline stopped there)."""
        return any(run.status == RunStatus.FAILED for run in self.runs)


def pipeline_state(first_run_id: uuid.UUID) -> PipelineState | None:
    """The pipeline that starts with `first_run_id` (None: no such run). Each run is
    followed by at most one (`follows_run_id` is unique), so this walks a chain; one
    short read per run, no items (it is polled)."""
    with session_scope() as session:
        first = session.get(Run, first_run_id)
        if first is None:
            return None
        chain = [first]
        while True:
            run = chain[-1]
            if run.status not in FINISHED_RUN_STATUSES:
                return PipelineState(chain, settled=False)
            if not (run.options or {}).get("then"):
                return PipelineState(chain, settled=True)
            follower = session.scalar(select(Run).where(Run.follows_run_id == run.id))
            if follower is None:
                return PipelineState(chain, settled=run.handed_off_at is not None)
            chain.append(follower)
