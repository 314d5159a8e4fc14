"""Giving finished items another go: a replay (dead or failed items) or a heal (items
degraded or failed by a vendor that is back). Their run opens again, its latch wound back,
and closes — recomputing its counts and status, handing off to a next stage that never
started — when they finish again. What the items were before is written in their history,
so a reason is never simply overwritten.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from pipeline import progress
from pipeline.db.engine import session_scope
from pipeline.db.models import ItemStatus, Run, RunItem, RunStatus, utcnow
from pipeline.runs import finish_item

REPLAYABLE = (ItemStatus.DEAD, ItemStatus.FAILED)


@dataclass(frozen=True)
class ReopenedItem:
    id: int
    status: ItemStatus  # as it was
    reasons: str  # as they were
    generation: int = 0  # the new copy of its work that may run now


def reopen_items(
    run_id: uuid.UUID,
    item_ids: Iterable[int] | None = None,
    *,
    to: ItemStatus = ItemStatus.PENDING,
    statuses: Iterable[ItemStatus] = REPLAYABLE,
    event: str = "reopened",
    note: Mapping[str, Any] | None = None,
) -> list[ReopenedItem]:
    """Reopen the run's items (all of them, or these) whose status is one of `statuses`: they
    become `to`, their status and reasons go to their history under `event` (with `note`),
    and the run opens again.
    Items in other states are left alone (a replay never redoes what succeeded). Returns
    the reopened items as they were, so a replay that cannot be sent can put them back
    (`restore_items`)."""
    allowed = list(statuses)
    with session_scope() as session:
        chosen = select(RunItem).where(RunItem.run_id == run_id, RunItem.status.in_(allowed))
        if item_ids is not None:
            chosen = chosen.where(RunItem.id.in_(list(item_ids)))
        reopened: list[ReopenedItem] = []
        for item in session.scalars(chosen.with_for_update()):
            generation = item.generation + 1
            reopened.append(
                ReopenedItem(item.id, ItemStatus(item.status), item.degraded_reasons, generation)
            )
            session.execute(
                update(RunItem)
                .where(RunItem.id == item.id)
                .values(
                    status=to,
                    degraded_reasons="",
                    updated_at=utcnow(),
                    progress_at=utcnow(),
                    redrives=0,  # another go on purpose: a fresh re-drive budget
                    generation=generation,
                    step=None,  # no step of the new copy has started yet
                    checkpoint=None,
                    history=progress.with_event(
                        item.history or [],
                        {
                            "event": event,
                            "status": item.status,
                            "reasons": item.degraded_reasons,
                            **(note or {}),
                        },
                    ),
                )
            )
        if reopened:
            run = session.get_one(Run, run_id, with_for_update=True)
            run.items_done -= len(reopened)
            if run.finished_at is not None:  # it had closed: its next close is a re-close
                run.replays += 1
            run.status, run.finished_at = RunStatus.RUNNING, None
            if (run.options or {}).get("then"):
                # it hands off again when it closes: a next stage that never started
                # starts, one that did is given what changed (`pipeline.stages`)
                run.handed_off_at = None
    return reopened


def restore_items(items: Iterable[ReopenedItem]) -> None:
    """Put reopened items back as they were (their run closes again, as it had)."""
    for item in items:
        finish_item(item.id, item.status, [r for r in item.reasons.split(",") if r])
