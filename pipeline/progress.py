"""Where each open item's work has got to, written down: the reconciler's view of the world.

Postgres is the source of truth and the broker may lose any message, so the work itself
leaves a durable trail. Each enrichment step, as it starts, records on its item which step
it is and what it was given (`mark_step`); a run task (CRM sync, export) records that it is
working through its run's open items (`touch_open_items`). An item whose trail has not moved
for its lease, although its queue could have delivered it, has lost its message: the
reconciler re-drives it from that step (`pipeline.reconciler`), and every step is safe to
run twice.

Marks are hints, not outcomes: they are committed without waiting for the disk
(`pipeline.db.engine.HINTS`). If Postgres itself crashes and loses the last few, the
reconciler re-drives from an earlier step — safe, like every re-drive.

The mark is also the gate. A step whose item is finished already, or does not exist (a
message for a run that was never made, another tenant's item), is refused: it calls no
vendor and writes nothing. So is a step of an older copy of the work: each re-drive, heal
and replay bumps the item's `generation`, the new copy carries it, and a message of the old
copy that turns up late stops at its next step instead of running the chain twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, func, select, update

from pipeline.db.engine import HINTS, engine_for, session_scope
from pipeline.db.models import (
    OPEN_ITEM_STATUSES,
    OPEN_RUN_STATUSES,
    ItemStatus,
    Run,
    RunItem,
    aware,
    utcnow,
)
from pipeline.settings import get_settings

# Events kept in an item's history; older ones are dropped (the newest matter most).
HISTORY_LIMIT = 30


_MARK = (
    update(RunItem)
    .where(
        RunItem.id == bindparam("b_item"),
        RunItem.run_id == bindparam("b_run"),
        RunItem.status.in_(OPEN_ITEM_STATUSES),
        exists().where(Run.id == bindparam("b_run"), Run.tenant_id == bindparam("b_tenant")),
    )
    .values(
        status=ItemStatus.RUNNING,
        step=bindparam("b_step"),
        checkpoint=bindparam("b_checkpoint"),
        progress_at=bindparam("b_at"),
    )
)
_MARK_FENCED = _MARK.where(RunItem.generation == bindparam("b_generation"))


def mark_step(
    item_id: int,
    run_id: uuid.UUID | str,
    tenant_id: int,
    step: str,
    checkpoint: Mapping[str, Any],
    *,
    generation: int | None = None,
) -> bool:
    """Record that `step` of an open item starts with `checkpoint` as its input; False when
    the item is finished, belongs to no such run and tenant, or has moved on to a newer
    copy of its work than `generation` (None: not checked). Repeating it is harmless: a
    retried step marks the same step again. Every step of every item runs this, so it is
    one prepared statement on a plain connection: no ORM session, no pre-ping."""
    params = {
        "b_item": item_id,
        "b_run": uuid.UUID(str(run_id)),
        "b_tenant": tenant_id,
        "b_generation": generation,
        "b_step": step,
        "b_checkpoint": dict(checkpoint),
        "b_at": utcnow(),
    }
    engine = engine_for(get_settings().database_url, purpose=HINTS)
    with engine.begin() as conn:
        marked = conn.execute(_MARK if generation is None else _MARK_FENCED, params)
        return bool(marked.rowcount)


def touch_open_items(
    run_id: uuid.UUID, statuses: Collection[str] = OPEN_ITEM_STATUSES, *, fresh_s: float = 0.0
) -> int:
    """A run task is working through its run's items in `statuses`: they moved now. How many
    there are (0: nothing for it to do). Items marked within the last `fresh_s` seconds are
    left as they are — a sync that comes back every few seconds (rate pauses) need not
    rewrite thousands of rows each time. Their step and checkpoint are not touched."""
    now = utcnow()
    with session_scope(purpose=HINTS) as session:
        chosen = RunItem.run_id == run_id, RunItem.status.in_(list(statuses))
        count = int(session.scalar(select(func.count()).where(*chosen)) or 0)
        if count:
            session.execute(
                update(RunItem)
                .where(*chosen, RunItem.progress_at < now - timedelta(seconds=fresh_s))
                .values(progress_at=now)
            )
        return count


@dataclass(frozen=True)
class OpenItem:
    """An open item as the reconciler sees it."""

    id: int
    run_id: uuid.UUID
    tenant_id: int
    kind: str
    item_key: str
    status: str
    step: str | None
    checkpoint: dict[str, Any] | None
    progress_at: datetime
    redrives: int
    generation: int
    history: list[dict[str, Any]]
    stamp: Any  # `progress_at` exactly as stored: what a compare-and-set compares with

    @property
    def resumable(self) -> bool:
        """An enrichment item that reached a step: it goes on from there."""
        return bool(self.step and self.checkpoint)


def quiet_items(
    before: datetime, *, tenant_id: int | None = None, limit: int = 1000
) -> list[OpenItem]:
    """Open items of open runs that have not moved since `before`, oldest first. (A run
    recorded failed before it was ever sent keeps its items pending: not ours to run.)"""
    query = (
        select(RunItem, Run.tenant_id, Run.kind)
        .join(Run, Run.id == RunItem.run_id)
        .where(
            RunItem.status.in_(OPEN_ITEM_STATUSES),
            RunItem.progress_at < before,
            Run.status.in_(OPEN_RUN_STATUSES),
        )
        .order_by(RunItem.progress_at)
        .limit(limit)
    )
    if tenant_id is not None:
        query = query.where(Run.tenant_id == tenant_id)
    with session_scope() as session:
        return [
            OpenItem(
                id=item.id,
                run_id=item.run_id,
                tenant_id=tenant,
                kind=kind,
                item_key=item.item_key,
                status=item.status,
                step=item.step,
                checkpoint=item.checkpoint,
                progress_at=aware(item.progress_at or item.updated_at),
                redrives=item.redrives,
                generation=item.generation,
                history=list(item.history or []),
                stamp=item.progress_at,
            )
            for item, tenant, kind in session.execute(query).all()
        ]


def claim_redrive(items: Iterable[OpenItem], event: dict[str, Any], *, to_pending: bool) -> int:
    """Count one re-drive of each of `items` — a new copy of its work (`generation` + 1),
    its history noting `event` — each only if it has not moved since it was read
    (compare-and-set on `progress_at`), so two reconcilers never re-drive one item twice
    and a step that started meanwhile is left alone. `to_pending`: its run's task takes it
    up again from the start. How many were claimed."""
    claimed = 0
    status = {"status": ItemStatus.PENDING} if to_pending else {}
    with session_scope() as session:
        for item in items:
            done = session.execute(
                update(RunItem)
                .where(
                    RunItem.id == item.id,
                    RunItem.progress_at == item.stamp,
                    RunItem.status.in_(OPEN_ITEM_STATUSES),
                )
                .values(
                    redrives=RunItem.redrives + 1,
                    generation=RunItem.generation + 1,
                    progress_at=utcnow(),
                    history=with_event(item.history, event),
                    **status,
                )
            )
            claimed += done.rowcount  # type: ignore[attr-defined]
    return claimed


def claim_run(
    run_id: uuid.UUID,
    before: datetime,
    event: dict[str, Any],
    *,
    to_pending: bool,
    unstarted_only: bool,
) -> int:
    """`claim_redrive` for every open item of a run quiet since `before` (`unstarted_only`:
    those no step has taken up yet), in one transaction: the run's task is then sent once,
    and no later pass finds part of the run still quiet and sends it again."""
    now = utcnow()
    chosen = [
        RunItem.run_id == run_id,
        RunItem.status.in_(OPEN_ITEM_STATUSES),
        RunItem.progress_at < before,
    ]
    if unstarted_only:
        chosen.append(RunItem.checkpoint.is_(None))
    with session_scope() as session:
        rows = session.execute(
            select(RunItem.id, RunItem.redrives, RunItem.generation, RunItem.history)
            .where(*chosen)
            .with_for_update(skip_locked=True)
        ).all()
        changes = [
            {
                "id": row.id,
                "redrives": row.redrives + 1,
                "generation": row.generation + 1,
                "progress_at": now,
                "history": with_event(row.history or [], event),
                **({"status": ItemStatus.PENDING} if to_pending else {}),
            }
            for row in rows
        ]
        if changes:
            session.execute(update(RunItem), changes)
        return len(changes)


def with_event(history: Iterable[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    """`history` with `event` (stamped now) appended, the oldest dropped past the limit."""
    stamped = {"at": utcnow().isoformat(), **event}
    return [*list(history), stamped][-HISTORY_LIMIT:]
