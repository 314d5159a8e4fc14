"""Recording runs, their items, and vendor calls: the one place that writes the run tables.

Item writes are safe to repeat, because tasks are acked late and may run twice: an attempt
number is set from Celery's retry count (not incremented); an item is finished once (a
repeat finds it terminal and changes nothing), and only that first finish advances the
run's `items_done` latch; a closing run's counts are recomputed from its items.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import case, event, exists, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline import deferrals
from pipeline.db.engine import joined, session_scope
from pipeline.db.models import (
    FINISHED_ITEM_STATUSES,
    OPEN_RUN_STATUSES,
    ItemStatus,
    Run,
    RunItem,
    RunKind,
    RunStatus,
    VendorCall,
    utcnow,
)
from pipeline.db.upsert import insert_for
from pipeline.errors import InputError

log = structlog.get_logger(__name__)
# The `last_error_code` of an item a batch write refused and a single write then saved.
RECOVERED = "BATCH_REJECTED"


@dataclass(frozen=True)
class RunView:
    run: Run
    items: list[RunItem]

    @property
    def recovered(self) -> int:
        """Items that succeeded one by one after their batch write refused them."""
        return sum(
            1
            for item in self.items
            if item.status == ItemStatus.SUCCEEDED and item.last_error_code == RECOVERED
        )


def run_id_from(value: Any) -> uuid.UUID:
    """A run id from what a caller typed or sent; `InputError` if it is not one (without
    the value: it came from outside and may be anything)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InputError("not a run id (a UUID such as 3f2a9c1e-...)") from None


def create_run(
    tenant_id: int,
    kind: RunKind,
    item_keys: Iterable[str],
    *,
    correlation_id: str | None = None,
    options: dict[str, Any] | None = None,
    parent_run_id: uuid.UUID | None = None,
    follows_run_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A pending run with one item per key. `follows_run_id` makes it the next stage of
    that run: at most one run follows another, so a second try returns the first's id."""
    keys = list(dict.fromkeys(item_keys))
    if follows_run_id is not None:
        existing = follower_of(follows_run_id)
        if existing is not None:
            return existing
    run = Run(
        parent_run_id=parent_run_id,
        follows_run_id=follows_run_id,
        tenant_id=tenant_id,
        kind=kind,
        status=RunStatus.PENDING,
        correlation_id=correlation_id,
        items_total=len(keys),
        options=options or {},
    )
    try:
        with session_scope() as session:
            session.add(run)
            session.flush()
            session.add_all(RunItem(run_id=run.id, item_key=key) for key in keys)
    except IntegrityError:
        found = follower_of(follows_run_id) if follows_run_id is not None else None
        if found is None:
            raise
        return found  # a concurrent start of the same stage won
    return run.id


def add_items(run_id: uuid.UUID, keys: Iterable[str]) -> int:
    """Add items for `keys` to a run (a key it has already is skipped); the run opens again
    until they finish too. How many were added."""
    rows = [{"run_id": run_id, "item_key": key} for key in dict.fromkeys(keys)]
    if not rows:
        return 0
    with session_scope() as session:
        statement = insert_for(session, RunItem).values(
            [
                {
                    **row,
                    "status": ItemStatus.PENDING,
                    "degraded_reasons": "",
                    "attempts": 0,
                    "redrives": 0,
                    "history": [],
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                    "progress_at": utcnow(),
                }
                for row in rows
            ]
        )
        added = session.execute(
            statement.on_conflict_do_nothing(index_elements=["run_id", "item_key"])
        ).rowcount  # type: ignore[attr-defined]
        if added:
            run = session.get_one(Run, run_id, with_for_update=True)
            run.items_total += added
            if run.finished_at is not None:  # it had closed: its next close is a re-close
                run.replays += 1
            run.status, run.finished_at = RunStatus.RUNNING, None
        return int(added)


def run_exists(run_id: uuid.UUID) -> bool:
    with session_scope() as session:
        return session.scalar(select(Run.id).where(Run.id == run_id)) is not None


def stages_of(first_run_id: uuid.UUID) -> list[uuid.UUID]:
    """The runs that work from an enrichment run (its CRM syncs and exports), oldest first."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(Run.id).where(Run.parent_run_id == first_run_id).order_by(Run.created_at)
            )
        )


def follower_of(run_id: uuid.UUID) -> uuid.UUID | None:
    """The run started as the next stage of `run_id`, if any."""
    with session_scope() as session:
        return session.scalar(select(Run.id).where(Run.follows_run_id == run_id))


def mark_handed_off(run_id: uuid.UUID) -> bool:
    """Record that a closed run's next stage was dealt with; False if it already was."""
    with session_scope() as session:
        done = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.handed_off_at.is_(None))
            .values(handed_off_at=utcnow())
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    key: str
    generation: int


def claim_pending_items(run_id: uuid.UUID) -> tuple[Run, list[ClaimedItem]]:
    """The run and its still-pending items, now queued (committed before any work is sent,
    so a first step never waits on this claim's row locks). If the sender dies before
    sending them all, the items it claimed sit queued with no step taken: the reconciler
    sends them again through the run's task (`pipeline.reconciler`)."""
    with session_scope() as session:
        run = session.get_one(Run, run_id)
        claimed = session.execute(
            update(RunItem)
            .where(RunItem.run_id == run_id, RunItem.status == ItemStatus.PENDING)
            .values(status=ItemStatus.QUEUED, updated_at=utcnow(), progress_at=utcnow())
            .returning(RunItem.id, RunItem.item_key, RunItem.generation)
        ).all()
    return run, [ClaimedItem(item_id, key, generation) for item_id, key, generation in claimed]


def progress(run_id: uuid.UUID) -> tuple[int, int]:
    """(items finished, items in all) of a run."""
    with session_scope() as session:
        done, total = session.execute(
            select(
                func.count().filter(RunItem.status.in_(FINISHED_ITEM_STATUSES)),
                func.count(),
            ).where(RunItem.run_id == run_id)
        ).one()
        return int(done), int(total)


def open_item_ids(run_id: uuid.UUID, *, only: Iterable[int] | None = None) -> list[int]:
    """The run's open items (among `only`, when given)."""
    query = select(RunItem.id).where(
        RunItem.run_id == run_id, RunItem.status.not_in(FINISHED_ITEM_STATUSES)
    )
    if only is not None:
        query = query.where(RunItem.id.in_(list(only)))
    with session_scope() as session:
        return list(session.scalars(query))


def item_ids(run_id: uuid.UUID) -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(RunItem.item_key, RunItem.id).where(RunItem.run_id == run_id))
        return {key: item_id for key, item_id in rows}


def record_attempt(item_id: int, attempt: int) -> None:
    """Note that attempt number `attempt` at an item has started (repeating it is harmless)."""
    with session_scope() as session:
        session.execute(
            update(RunItem)
            .where(RunItem.id == item_id)
            .values(
                attempts=case((RunItem.attempts < attempt, attempt), else_=RunItem.attempts),
                status=case(
                    (
                        RunItem.status.in_((ItemStatus.PENDING, ItemStatus.QUEUED)),
                        ItemStatus.RUNNING,
                    ),
                    else_=RunItem.status,
                ),
                updated_at=utcnow(),
            )
        )


def record_item_error(item_id: int, error_code: str) -> None:
    with session_scope() as session:
        session.execute(
            update(RunItem)
            .where(RunItem.id == item_id)
            .values(last_error_code=error_code, updated_at=utcnow())
        )


def finish_item(
    item_id: int,
    status: ItemStatus,
    reasons: Iterable[str] = (),
    *,
    deferred: Mapping[str, str] | None = None,
    fence: tuple[uuid.UUID, int, int | None] | None = None,
    session: Session | None = None,
) -> Run | None:
    """Give an item its final status and reasons; returns the run if this was its last open
    item (the run is then closed, and only this caller gets it). See `mark_item_finished`.
    `deferred` (vendor → reason): the vendors whose work it now waits for, to be healed
    (`pipeline.deferrals.settle`; None leaves its deferrals as they are). `fence`: see
    `mark_item_finished`."""
    with joined(session) as db:
        run_id = mark_item_finished(item_id, status, reasons, session=db, fence=fence)
        if run_id is None:
            return None
        if deferred is not None:
            deferrals.settle(db, item_id, run_id, deferred)
        return count_item_done(run_id, session=db)


def mark_item_finished(
    item_id: int,
    status: ItemStatus,
    reasons: Iterable[str],
    *,
    session: Session,
    fence: tuple[uuid.UUID, int, int | None] | None = None,
) -> uuid.UUID | None:
    """Set a still-open item's final status and comma-joined reasons; its run's id, or None
    when the item was already terminal (a repeated last step: the caller writes nothing).
    `fence` (run id, tenant, generation or None), from a step's message: only if the item
    is that run's and tenant's, and the message is of its current copy of the work (as
    `pipeline.progress.mark_step` checks)."""
    fenced = []
    if fence is not None:
        run, tenant, generation = fence
        fenced = [
            RunItem.run_id == run,
            exists().where(Run.id == run, Run.tenant_id == tenant),
        ]
        if generation is not None:
            fenced.append(RunItem.generation == generation)
    run_id = session.scalar(
        update(RunItem)
        .where(RunItem.id == item_id, RunItem.status.not_in(FINISHED_ITEM_STATUSES), *fenced)
        # its checkpoint served its purpose (and holds contacts' data): not kept
        .values(
            status=status,
            degraded_reasons=",".join(reasons),
            updated_at=utcnow(),
            checkpoint=None,
        )
        .returning(RunItem.run_id)
    )
    if run_id is not None and status == ItemStatus.DEAD:
        deferrals.drop_for(session, item_id)  # a dead item heals by replay, not by waiting
    return run_id


def count_item_done(run_id: uuid.UUID, *, session: Session) -> Run | None:
    """Advance the run's latch by one finished item; close the run at the last one."""
    done, total = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(items_done=Run.items_done + 1)
        .returning(Run.items_done, Run.items_total)
    ).one()
    return _close(session, run_id) if done >= total else None


def close_finished(run_id: uuid.UUID) -> bool:
    """Close an open run none of whose items is open any more (its latch set to match);
    True if this call closed it. Safe to race: the close is conditional."""
    with session_scope() as session:
        # the run's row locked first, as reopening and adding items lock it: none of them
        # can open an item between this count and the close
        session.get_one(Run, run_id, with_for_update=True)
        open_items = session.scalar(
            select(func.count()).where(
                RunItem.run_id == run_id, RunItem.status.not_in(FINISHED_ITEM_STATUSES)
            )
        )
        if open_items:
            return False
        session.execute(update(Run).where(Run.id == run_id).values(items_done=Run.items_total))
        return _close(session, run_id) is not None


def disable_export(run_id: uuid.UUID, why: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(export_disabled=True, export_disabled_reason=why)
        )


def enable_export(run_id: uuid.UUID) -> None:
    """The ERP is back for a disabled export's healing: it may write again."""
    with session_scope() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(export_disabled=False, export_disabled_reason=None)
        )


def fail_unstarted(run_id: uuid.UUID, reason: str) -> None:
    """A run whose work could not be handed to the workers: failed, with why."""
    with session_scope() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.PENDING)
            .values(status=RunStatus.FAILED, degraded_reasons=reason, finished_at=utcnow())
        )


def was_sent(run_id: uuid.UUID) -> bool:
    with session_scope() as session:
        return session.scalar(select(Run.sent_at).where(Run.id == run_id)) is not None


def mark_sent(run_id: uuid.UUID) -> None:
    """The run's task is on the broker."""
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(sent_at=utcnow()))


def mark_running(run_id: uuid.UUID) -> None:
    with session_scope() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.PENDING)
            .values(status=RunStatus.RUNNING, started_at=utcnow())
        )


def _close(db: Session, run_id: uuid.UUID) -> Run | None:
    """The conditional UPDATE (`status` still open) lets exactly one caller close a run."""
    closed = db.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(OPEN_RUN_STATUSES))
        .values(**_summary(db, run_id), finished_at=utcnow())
    )
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    db.info.setdefault(_CLOSED_RUNS, []).append(run_id)
    run = db.get_one(Run, run_id)
    if not (run.options or {}).get("then"):  # no next stage: nothing to hand off
        run.handed_off_at = run.finished_at
    return run


# -- what happens after a run closes ----------------------------------------------------------

_CLOSED_RUNS = "pipeline.closed_runs"
_after_close: list[Callable[[uuid.UUID], None]] = []


def when_run_closes(listener: Callable[[uuid.UUID], None]) -> None:
    """Call `listener(run_id)` once a closed run is committed (once per run, in the one
    process that closed it). The next stage of a pipeline starts this way."""
    _after_close.append(listener)


@event.listens_for(Session, "after_commit")
def _announce_closed_runs(session: Session) -> None:
    for run_id in session.info.pop(_CLOSED_RUNS, []):
        for listener in _after_close:
            try:
                listener(run_id)
            except Exception as exc:  # a listener's trouble must not undo the close
                log.error("run.after_close_failed", run_id=str(run_id), error=type(exc).__name__)


def _summary(session: Session, run_id: uuid.UUID) -> dict[str, Any]:
    """Counts, status and reasons from the items; latency figures from `vendor_calls`.

    `succeeded` when no item has a reason, `degraded` when some do, `failed` only when no
    item could be processed at all.
    """
    counts = dict(
        session.execute(
            select(RunItem.status, func.count())
            .where(RunItem.run_id == run_id)
            .group_by(RunItem.status)
        ).all()
    )
    joined = session.scalars(
        select(RunItem.degraded_reasons).where(
            RunItem.run_id == run_id, RunItem.degraded_reasons != ""
        )
    ).all()
    reasons = sorted({r for row in joined for r in row.split(",") if r})
    total = sum(counts.values())
    succeeded = counts.get(ItemStatus.SUCCEEDED, 0)
    degraded_items = counts.get(ItemStatus.DEGRADED, 0)
    processed = succeeded + degraded_items
    degraded = bool(reasons) or processed < total
    if total and processed == 0:
        status = RunStatus.FAILED
    else:
        status = RunStatus.DEGRADED if degraded else RunStatus.SUCCEEDED
    return {
        "status": status,
        "degraded": degraded,
        "degraded_reasons": ",".join(reasons),
        "items_total": total,
        "items_succeeded": succeeded,
        "items_degraded": degraded_items,
        "items_failed": counts.get(ItemStatus.FAILED, 0),
        "items_dead": counts.get(ItemStatus.DEAD, 0),
        "vendor_stats": vendor_stats(session, run_id),
    }


def vendor_stats(session: Session, run_id: uuid.UUID) -> dict[str, dict[str, float]]:
    """Per vendor: calls, errors, p50 and p95 latency (nearest rank), for one run."""
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    rows = session.execute(
        select(VendorCall.vendor, VendorCall.latency_ms, VendorCall.ok).where(
            VendorCall.run_id == run_id
        )
    )
    for vendor, latency, ok in rows:
        latencies.setdefault(vendor, []).append(latency)
        errors[vendor] = errors.get(vendor, 0) + (0 if ok else 1)
    return {
        vendor: {
            "calls": len(values),
            "errors": errors[vendor],
            "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1),
        }
        for vendor, values in sorted(latencies.items())
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def record_vendor_call(
    *,
    tenant_id: int,
    vendor: str,
    ok: bool,
    latency_ms: float,
    error_code: str | None = None,
    run_id: uuid.UUID | None = None,
) -> None:
    """One row per call (a plain INSERT: this runs on every vendor call)."""
    with session_scope() as session:
        session.execute(
            insert(VendorCall).values(
                run_id=run_id,
                tenant_id=tenant_id,
                vendor=vendor,
                ok=ok,
                error_code=error_code,
                latency_ms=latency_ms,
                at=utcnow(),
            )
        )


def record_vendor_calls(calls: Iterable[dict[str, Any]], *, session: Session | None = None) -> None:
    """Several calls' rows in one INSERT (calls collected by a job and written with its item)."""
    rows = [
        {
            "run_id": uuid.UUID(str(c["run_id"])) if c.get("run_id") else None,
            "tenant_id": c["tenant_id"],
            "vendor": c["vendor"],
            "ok": c["ok"],
            "error_code": c.get("error_code"),
            "latency_ms": c["latency_ms"],
            "at": utcnow(),
        }
        for c in calls
    ]
    if rows:
        with joined(session) as db:
            db.execute(insert(VendorCall), rows)


def get_run(run_id: uuid.UUID) -> RunView | None:
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        items = session.scalars(
            select(RunItem).where(RunItem.run_id == run_id).order_by(RunItem.id)
        ).all()
        return RunView(run, list(items))


def list_runs(
    *,
    tenant_id: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Run]:
    """Runs newest first, filtered; `before` = (created_at, id) of the last run of the
    previous page. Keyset paging: a run started meanwhile never shifts a page, and a deep
    page costs what the first does."""
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(Run.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Run.status == status)
    if kind is not None:
        query = query.where(Run.kind == kind)
    if before is not None:
        query = query.where(tuple_(Run.created_at, Run.id) < tuple_(*before))
    with session_scope() as session:
        return list(session.scalars(query))
