"""The reconciler: Postgres says what should be happening; make the broker agree.

Run by beat every `RECONCILE_INTERVAL_S` (`tasks.maintenance.reconcile`) and by hand
(`pipeline reconcile`). One pass, under a lock so that two never overlap:

1. **Resets** — a Redis that restarted empty lost every message it held; open items that
   last moved before it was found so are re-driven at once (`pipeline.reconciler_marks`).
2. **Lost messages** — an open item that has not moved for its kind's lease
   (`RECONCILE_LEASE_S`), although its queue has been seen empty since it last moved, lost
   its message (a killed worker's unacked message, a dropped publish, anything): it is
   re-driven from its last durable step (`pipeline.progress`). The queue condition keeps
   work that is merely waiting behind a long queue from being sent twice; the lease
   outlasts a step's time limit plus its longest countdown, so running and delayed work is
   never taken for lost. Re-driving is idempotent because every step is.
3. **Give up** — an item re-driven `RECONCILE_MAX_REDRIVES` times is dead-lettered as
   `stalled`, with its history; its run closes, and `pipeline dlq replay` can try again.
4. **Runs** — an open run whose items are all finished is closed; stage hand-offs that a
   crash or a down broker lost are made good (`pipeline.stages.sweep_pipelines`).
5. **Dead letters** reported while the database was down (spooled in Redis) are written.
6. **Healing** — work deferred while a vendor was down is redone once it is back
   (`pipeline.healing`); breakers a Redis reset forgot are re-opened from
   `breaker_events` (`pipeline.breakers.restore`).

What it sends goes through `Dispatch`, and what it sees of the broker through
`BrokerView`: both given by the adapter that runs it (`tasks.maintenance`), so this core
knows no Celery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import exists, select, text

from pipeline import dead_letters, metrics, progress, runs, stages
from pipeline.breakers.restore import restore_open_breakers
from pipeline.db.engine import engine_for, session_scope
from pipeline.db.models import (
    OPEN_ITEM_STATUSES,
    OPEN_RUN_STATUSES,
    ReconcilerMark,
    Run,
    RunItem,
    RunKind,
    utcnow,
)
from pipeline.healing import Healer, HealReport
from pipeline.reconciler_marks import RedisEpoch, marks, read_mark, write_mark
from pipeline.redrive import Dispatch, Redriver
from pipeline.settings import Settings

log = structlog.get_logger(__name__)
LOCK_KEY = 0x70697065  # pg advisory lock: one reconciler pass at a time, cluster-wide


class BrokerView(Protocol):
    def queue_of(self, kind: str) -> str:
        """The queue a run kind's messages travel on."""

    def depth(self, queue: str) -> int | None:
        """Messages waiting on `queue` (None: the broker cannot be asked now)."""

    def epochs(self) -> list[RedisEpoch]:
        """The epoch of each Redis the product depends on (none for other brokers)."""


@dataclass
class ReconcileReport:
    skipped: bool = False  # another pass held the lock
    resets: list[str] = field(default_factory=list)
    redriven: Counter[str] = field(default_factory=Counter)  # by kind
    stalled: int = 0  # dead-lettered after too many re-drives
    overdue: Counter[str] = field(default_factory=Counter)  # past their lease, by kind
    runs_closed: int = 0
    handoffs: int = 0
    spooled: int = 0  # dead letters written from the spool kept while the database was down
    breakers_restored: int = 0  # re-opened from breaker_events after their Redis reset
    heal: HealReport = field(default_factory=HealReport)

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "resets": self.resets,
            "redriven": dict(self.redriven),
            "stalled": self.stalled,
            "overdue": dict(self.overdue),
            "runs_closed": self.runs_closed,
            "handoffs": self.handoffs,
            "spooled": self.spooled,
            "breakers_restored": self.breakers_restored,
            "heal": self.heal.as_dict(),
        }


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        broker: BrokerView,
        dispatch: Dispatch,
        *,
        healer: Healer | None = None,
    ) -> None:
        self.settings, self.broker, self.dispatch, self.healer = settings, broker, dispatch, healer

    def run(self, *, now: datetime | None = None, tenant_id: int | None = None) -> ReconcileReport:
        report = ReconcileReport()
        with pass_lock(self.settings.database_url) as held:
            if not held:
                report.skipped = True
                return report
            now = now or utcnow()
            reset = [e for e in self.broker.epochs() if e.check(now) is not None]
            report.resets = [epoch.name for epoch in reset]
            if any(epoch.holds_state for epoch in reset):
                report.breakers_restored = restore_open_breakers(now)
            report.spooled = dead_letters.drain_spool()
            self._redrive(now, tenant_id, report)
            report.runs_closed = close_finished_runs(now, tenant_id=tenant_id)
            if self.healer is not None:
                report.heal = self.healer.run(now, tenant_id=tenant_id)
            report.handoffs = stages.sweep_pipelines(
                now=now,
                tenant_id=tenant_id,
                grace_s=max(2.0, 2 * self.settings.reconcile_interval_s),
            )
        metrics.record_reconcile(report.redriven, report.overdue, now.timestamp())
        log.info("reconciler.pass", **report.as_dict())
        return report

    # -- lost messages ---------------------------------------------------------------------

    def _redrive(self, now: datetime, tenant_id: int | None, report: ReconcileReport) -> None:
        """See the module docstring, point 2. The lease counts from an item's last move — or
        from when the reconciler itself could run again after a gap (the database down,
        beat stopped), since nothing could mark progress meanwhile. A queue seen empty
        counts only if seen a whole step after the item's last move: by then the step had
        sent its next message, which had left the queue, or was lost."""
        drained = self._observe_queues(now)
        reset_at = _latest(marks("reset:"))
        resumed_at = self._resumed_at(now)
        step_s = timedelta(seconds=self.settings.task_time_limit_s)

        def lost(item: progress.OpenItem) -> str | None:
            if reset_at is not None and item.progress_at < reset_at:
                return "redis_reset"
            since = max(item.progress_at, resumed_at) if resumed_at else item.progress_at
            overdue = now - since > timedelta(seconds=self.settings.lease_s(item.kind))
            report.overdue[item.kind] += overdue
            seen_empty = drained.get(self.broker.queue_of(item.kind))
            if overdue and seen_empty is not None and seen_empty > item.progress_at + step_s:
                return "lease"
            return None

        shortest = min(self.settings.lease_s(kind) for kind in RunKind)
        before = now - timedelta(seconds=shortest)
        if reset_at is not None:
            before = max(before, reset_at)
        redriven, report.stalled = Redriver(self.settings, self.dispatch).run(
            before, lost, now=now, tenant_id=tenant_id
        )
        report.redriven.update(redriven)

    def _observe_queues(self, now: datetime) -> dict[str, datetime]:
        """When each queue was last seen empty (now, for those empty now)."""
        for queue in {self.broker.queue_of(kind) for kind in RunKind}:
            if self.broker.depth(queue) == 0:
                write_mark(f"drained:{queue}", at=now)
        return {name: mark.at for name, mark in marks("drained:").items()}

    def _resumed_at(self, now: datetime) -> datetime | None:
        """When passes resumed after a gap of more than three intervals (None: never)."""
        last = read_mark("pass")
        gap = timedelta(seconds=max(60.0, 3 * self.settings.reconcile_interval_s))
        if last is not None and now - last.at > gap:
            log.warning("reconciler.resumed", gap_s=round((now - last.at).total_seconds()))
            write_mark("resumed", at=now)
        write_mark("pass", at=now)
        resumed = read_mark("resumed")
        return resumed.at if resumed is not None else None


def _latest(found: dict[str, ReconcilerMark]) -> datetime | None:
    return max((mark.at for mark in found.values()), default=None)


def close_finished_runs(now: datetime, *, tenant_id: int | None = None) -> int:
    """Close open runs none of whose items is open any more (their latch missed a count)."""
    open_item = exists().where(RunItem.run_id == Run.id, RunItem.status.in_(OPEN_ITEM_STATUSES))
    query = select(Run.id).where(
        Run.status.in_(OPEN_RUN_STATUSES),
        Run.created_at < now - timedelta(seconds=30),
        ~open_item,
    )
    if tenant_id is not None:
        query = query.where(Run.tenant_id == tenant_id)
    with session_scope() as session:
        finished = list(session.scalars(query))
    closed = sum(1 for run_id in finished if runs.close_finished(run_id))
    if closed:
        log.warning("reconciler.runs_closed", runs=closed)
    return closed


@contextmanager
def pass_lock(database_url: str) -> Iterator[bool]:
    """One pass at a time: a Postgres advisory lock held on its own connection (freed if the
    holder dies); SQLite (the embedded single process) needs none."""
    if not database_url.startswith("postgresql"):
        yield True
        return
    engine = engine_for(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
