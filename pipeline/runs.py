"""Recording runs, their items, and vendor calls: the one place that writes the run tables.

Item writes are safe to repeat, because tasks are acked late and may run twice: an attempt
number is set from Celery's retry count (not incremented), item outcomes overwrite, and a
run's counts are recomputed from its items rather than incremented.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import case, func, select, update

from pipeline.db.engine import session_scope
from pipeline.db.models import ItemStatus, Run, RunItem, RunKind, RunStatus, VendorCall, utcnow


@dataclass(frozen=True)
class RunView:
    run: Run
    items: list[RunItem]


def create_run(
    tenant_id: int,
    kind: RunKind,
    item_keys: Iterable[str],
    *,
    correlation_id: str | None = None,
) -> uuid.UUID:
    keys = list(dict.fromkeys(item_keys))
    run = Run(
        tenant_id=tenant_id,
        kind=kind,
        status=RunStatus.PENDING,
        correlation_id=correlation_id,
        items_total=len(keys),
    )
    with session_scope() as session:
        session.add(run)
        session.flush()
        session.add_all(RunItem(run_id=run.id, item_key=key) for key in keys)
    return run.id


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
                    (RunItem.status == ItemStatus.PENDING, ItemStatus.RUNNING),
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


def finish_item(item_id: int, status: ItemStatus, reasons: Iterable[str] = ()) -> None:
    """Set an item's final status and its comma-joined degradation reasons (overwrites)."""
    with session_scope() as session:
        session.execute(
            update(RunItem)
            .where(RunItem.id == item_id)
            .values(status=status, degraded_reasons=",".join(reasons), updated_at=utcnow())
        )


def finalize_run(run_id: uuid.UUID) -> Run:
    """Recompute a run's counts and status from its items.

    `succeeded` when no item has a reason, `degraded` when some do, `failed` only when no
    item could be processed at all.
    """
    with session_scope() as session:
        counts = dict(
            session.execute(
                select(RunItem.status, func.count())
                .where(RunItem.run_id == run_id)
                .group_by(RunItem.status)
            ).all()
        )
        reasons = session.scalars(
            select(RunItem.degraded_reasons).where(
                RunItem.run_id == run_id, RunItem.degraded_reasons != ""
            )
        ).all()
        distinct = sorted({r for joined in reasons for r in joined.split(",") if r})
        run = session.get_one(Run, run_id)
        run.items_succeeded = counts.get(ItemStatus.SUCCEEDED, 0)
        run.items_degraded = counts.get(ItemStatus.DEGRADED, 0)
        run.items_failed = counts.get(ItemStatus.FAILED, 0)
        run.items_dead = counts.get(ItemStatus.DEAD, 0)
        processed = run.items_succeeded + run.items_degraded
        run.degraded = bool(distinct) or processed < run.items_total
        run.degraded_reasons = ",".join(distinct)
        if run.items_total and processed == 0:
            run.status = RunStatus.FAILED
        else:
            run.status = RunStatus.DEGRADED if run.degraded else RunStatus.SUCCEEDED
        run.finished_at = utcnow()
        return run


def record_vendor_call(
    *,
    tenant_id: int,
    vendor: str,
    ok: bool,
    latency_ms: float,
    error_code: str | None = None,
    run_id: uuid.UUID | None = None,
) -> None:
    with session_scope() as session:
        session.add(
            VendorCall(
                run_id=run_id,
                tenant_id=tenant_id,
                vendor=vendor,
                ok=ok,
                error_code=error_code,
                latency_ms=latency_ms,
            )
        )


def get_run(run_id: uuid.UUID) -> RunView | None:
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        items = session.scalars(
            select(RunItem).where(RunItem.run_id == run_id).order_by(RunItem.id)
        ).all()
        return RunView(run, list(items))
