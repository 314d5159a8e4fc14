"""Where each open item's work has got to, written down: the reconciler's view of the world.

Postgres is the source of truth and the broker may lose any message, so the work itself
leaves a durable trail. Each enrichment step, as it starts, records on its item which step
it is and what it was given (`mark_step`); a run task (CRM sync, export) records that it is
working through its run's open items (`touch_open_items`). An item whose trail has not moved
for its lease, although its queue could have delivered it, has lost its message: the
reconciler re-drives it from that step (`pipeline.reconciler`), and every step is safe to
run twice.

The mark is also the gate. A step whose item is finished already (a duplicate delivery, a
re-driven copy that lost the race) or does not exist (a message for a run that was never
made, or another tenant's item) is refused: it calls no vendor and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, update

from pipeline.db.engine import session_scope
from pipeline.db.models import OPEN_ITEM_STATUSES, ItemStatus, Run, RunItem, utcnow

# Events kept in an item's history; older ones are dropped (the newest matter most).
HISTORY_LIMIT = 30


def mark_step(
    item_id: int, run_id: uuid.UUID | str, tenant_id: int, step: str, checkpoint: Mapping[str, Any]
) -> bool:
    """Record that `step` of an open item starts with `checkpoint` as its input; False when
    the item is finished, or no such item belongs to that run and tenant (do nothing then).
    Repeating it is harmless: a retried step marks the same step again."""
    run = uuid.UUID(str(run_id))
    with session_scope() as session:
        marked = session.execute(
            update(RunItem)
            .where(
                RunItem.id == item_id,
                RunItem.run_id == run,
                RunItem.status.in_(OPEN_ITEM_STATUSES),
                exists().where(Run.id == run, Run.tenant_id == tenant_id),
            )
            .values(
                status=ItemStatus.RUNNING,
                step=step,
                checkpoint=dict(checkpoint),
                progress_at=utcnow(),
            )
        )
        return bool(marked.rowcount)  # type: ignore[attr-defined]


def touch_open_items(run_id: uuid.UUID, step: str, *, fresh_s: float = 0.0) -> int:
    """A run task is working through its run: its open items moved now. How many are open.
    Items marked within the last `fresh_s` seconds are left as they are — a sync that comes
    back every few seconds (rate pauses) need not rewrite thousands of rows each time."""
    now = utcnow()
    with session_scope() as session:
        still_open = RunItem.run_id == run_id, RunItem.status.in_(OPEN_ITEM_STATUSES)
        count = int(session.scalar(select(func.count()).where(*still_open)) or 0)
        if count:
            session.execute(
                update(RunItem)
                .where(*still_open, RunItem.progress_at < now - timedelta(seconds=fresh_s))
                .values(step=step, progress_at=now)
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
    history: list[dict[str, Any]]


def quiet_items(
    before: datetime, *, tenant_id: int | None = None, limit: int = 1000
) -> list[OpenItem]:
    """Open items that have not moved since `before`, oldest first."""
    query = (
        select(RunItem, Run.tenant_id, Run.kind)
        .join(Run, Run.id == RunItem.run_id)
        .where(RunItem.status.in_(OPEN_ITEM_STATUSES), RunItem.progress_at < before)
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
                progress_at=_aware(item.progress_at or item.updated_at),
                redrives=item.redrives,
                history=list(item.history or []),
            )
            for item, tenant, kind in session.execute(query).all()
        ]


def claim_redrive(item: OpenItem, event: dict[str, Any], *, to_pending: bool = False) -> bool:
    """Count one re-drive of `item` and note it in its history — only if the item has not
    moved since it was read (compare-and-set on `progress_at`), so two reconcilers never
    re-drive one item twice and a step that started meanwhile is left alone. `to_pending`:
    its run's task will take it up again from the start (no step to resume from)."""
    status = {"status": ItemStatus.PENDING} if to_pending else {}
    with session_scope() as session:
        claimed = session.execute(
            update(RunItem)
            .where(
                RunItem.id == item.id,
                RunItem.progress_at == item.progress_at,
                RunItem.status.in_(OPEN_ITEM_STATUSES),
            )
            .values(
                redrives=RunItem.redrives + 1,
                progress_at=utcnow(),
                history=with_event(item.history, event),
                **status,
            )
        )
        return bool(claimed.rowcount)  # type: ignore[attr-defined]


def with_event(history: Iterable[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    """`history` with `event` (stamped now) appended, the oldest dropped past the limit."""
    stamped = {"at": utcnow().isoformat(), **event}
    return [*list(history), stamped][-HISTORY_LIMIT:]


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); Postgres aware ones."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
