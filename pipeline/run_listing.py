"""Finding runs the way an operator asks for them: by tenant, status, kind, age — and
*stuck*, so a run that stopped moving is found without SQL (`pipeline runs list`).

Stuck has one definition, the reconciler's own: an open item (pending, queued, running)
that has not moved for its run kind's lease (`RECONCILE_LEASE_S`). Past that the reconciler
re-drives it as lost once its queue is seen empty (`pipeline.reconciler`, point 2); a run
listed as stuck is one that needed that, or is still waiting behind a long queue.

Run ids are long; wherever one is typed, a unique prefix of it will do (`resolve_run_id`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from pipeline.db.engine import session_scope
from pipeline.db.models import OPEN_ITEM_STATUSES, Run, RunItem, RunKind, aware, utcnow
from pipeline.errors import InputError
from pipeline.settings import get_settings

MAX_LIMIT = 1000
_HEX_PREFIX = re.compile(r"^[0-9a-f]{1,32}$")


@dataclass(frozen=True)
class RunFilter:
    """What to list; every field optional (None or empty: no filter on it)."""

    tenant_id: int | None = None
    statuses: Sequence[str] = ()
    kinds: Sequence[str] = ()
    since: datetime | None = None  # created at or after
    stuck: bool = False
    limit: int = 50


@dataclass(frozen=True)
class ListedRun:
    """A run as listed: the run, and how many of its open items are past their lease."""

    run: Run
    overdue_items: int
    oldest_move_at: datetime | None  # the longest-unmoved overdue item's last move

    @property
    def stuck(self) -> bool:
        return self.overdue_items > 0

    def as_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "id": str(run.id),
            "tenant_id": run.tenant_id,
            "kind": run.kind,
            "status": run.status,
            "items_total": run.items_total,
            "items_succeeded": run.items_succeeded,
            "items_degraded": run.items_degraded,
            "items_failed": run.items_failed,
            "items_dead": run.items_dead,
            "degraded_reasons": [r for r in (run.degraded_reasons or "").split(",") if r],
            "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
            "created_at": _iso(run.created_at),
            "finished_at": _iso(run.finished_at),
            "stuck": self.stuck,
            "overdue_items": self.overdue_items,
            "oldest_move_at": _iso(self.oldest_move_at),
        }


def find_runs(wanted: RunFilter, *, now: datetime | None = None) -> list[ListedRun]:
    """Runs matching `wanted`, newest first, at most `wanted.limit` (1 to MAX_LIMIT)."""
    if not 1 <= wanted.limit <= MAX_LIMIT:
        raise InputError(f"limit must be 1-{MAX_LIMIT}")
    overdue = _overdue_items(now or utcnow()).subquery()
    query = (
        select(Run, overdue.c.stale, overdue.c.oldest)
        .outerjoin(overdue, overdue.c.run_id == Run.id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(wanted.limit)
    )
    if wanted.tenant_id is not None:
        query = query.where(Run.tenant_id == wanted.tenant_id)
    if wanted.statuses:
        query = query.where(Run.status.in_(list(wanted.statuses)))
    if wanted.kinds:
        query = query.where(Run.kind.in_(list(wanted.kinds)))
    if wanted.since is not None:
        query = query.where(Run.created_at >= wanted.since)
    if wanted.stuck:
        query = query.where(overdue.c.stale > 0)
    with session_scope() as session:
        return [
            ListedRun(run, int(items or 0), aware(oldest) if oldest else None)
            for run, items, oldest in session.execute(query)
        ]


def _overdue_items(now: datetime) -> Any:
    """Per run: its open items that have not moved for their kind's lease, and the oldest
    last move among them."""
    settings = get_settings()
    past_lease = or_(
        *(
            and_(
                Run.kind == kind,
                RunItem.progress_at < now - timedelta(seconds=settings.lease_s(kind)),
            )
            for kind in RunKind
        )
    )
    return (
        select(
            RunItem.run_id,
            func.count().label("stale"),
            func.min(RunItem.progress_at).label("oldest"),
        )
        .join(Run, Run.id == RunItem.run_id)
        .where(RunItem.status.in_(OPEN_ITEM_STATUSES), past_lease)
        .group_by(RunItem.run_id)
    )


def resolve_run_id(text: str, *, field: str = "run id", tenant_id: int | None = None) -> uuid.UUID:
    """The run a typed id, or a unique prefix of one, names (hyphens optional).

    Raises `InputError` naming `field` — never quoting what was typed — when it is not hex,
    names no run, or is a prefix of several (those are named, so the next try is right)."""
    digits = text.strip().lower().replace("-", "")
    if not _HEX_PREFIX.match(digits):
        raise InputError(f"{field}: not a run id (expected a run id or a unique prefix of one)")
    low = uuid.UUID(digits.ljust(32, "0"))
    high = uuid.UUID(digits.ljust(32, "f"))
    query = select(Run.id).where(Run.id >= low, Run.id <= high).order_by(Run.id).limit(3)
    if tenant_id is not None:
        query = query.where(Run.tenant_id == tenant_id)
    with session_scope() as session:
        found = list(session.scalars(query))
    whose = "" if tenant_id is None else f" of tenant {tenant_id}"
    if not found:
        what = "id" if len(digits) == 32 else "id starting so"
        raise InputError(f"{field}: no run{whose} has that {what}")
    if len(found) > 1:
        shown = ", ".join(str(run_id) for run_id in found[:2]) + (", ..." if found[2:] else "")
        raise InputError(
            f"{field}: the prefix matches several runs{whose} ({shown}): type more of the id"
        )
    return found[0]


def _iso(at: datetime | None) -> str | None:
    return aware(at).isoformat() if at is not None else None
