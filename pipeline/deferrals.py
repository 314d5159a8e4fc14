"""Deferred work: what an item could not do because a vendor was passing through trouble.

An item degraded by a condition that passes — its vendor's breaker open, the vendor down
or timing out past the retry policy, a rate limit — is not finished for good: each such
vendor is *deferred* for the item, one `deferrals` row per (item, vendor). Whoever writes an
item's outcome says which vendors it is waiting for now (`settle`, in the same
transaction): new ones start waiting, ones no longer named are healed. `pipeline.healing`
redoes the missing steps once the vendor is back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipeline import metrics
from pipeline.db.engine import session_scope
from pipeline.db.models import (
    OPEN_ITEM_STATUSES,
    Deferral,
    DeferralStatus,
    Run,
    RunItem,
    utcnow,
)
from pipeline.errors import CircuitOpenError, RetriesExhaustedError, VendorError
from pipeline.progress import with_event

LIVE = (DeferralStatus.WAITING, DeferralStatus.HEALING)


def is_passing(exc: VendorError) -> bool:
    """A vendor condition that passes by itself, so the work is worth redoing later: an
    open breaker, a retryable failure (5xx, timeout, rate limit, full bulkhead) that
    outlasted the retry policy. A refusal (4xx, auth), a broken answer or a missing
    database needs a person, not time."""
    if isinstance(exc, RetriesExhaustedError):
        return exc.details.get("last_error_code") not in {"BAD_RESPONSE", "CLIENT_ERROR"}
    return exc.retryable or isinstance(exc, CircuitOpenError)


def settle(
    session: Session,
    item_id: int,
    run_id: uuid.UUID,
    deferred: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> list[str]:
    """The item's outcome is written: it now waits for exactly the vendors in `deferred`
    (vendor → reason). Returns the vendors it had been waiting for and no longer does
    (healed). Runs in the caller's transaction, beside the outcome it follows from."""
    now = now or utcnow()
    rows = {
        row.vendor: row
        for row in session.scalars(
            select(Deferral).where(Deferral.item_id == item_id).with_for_update()
        )
    }
    new = [vendor for vendor in deferred if vendor not in rows]
    if new:
        tenant_id, kind = session.execute(
            select(Run.tenant_id, Run.kind).where(Run.id == run_id)
        ).one()
        for vendor in new:
            session.add(
                Deferral(
                    tenant_id=tenant_id,
                    vendor=vendor,
                    kind=kind,
                    run_id=run_id,
                    item_id=item_id,
                    reason=deferred[vendor][:255],
                    status=DeferralStatus.WAITING,
                    attempts=0,
                    next_try_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    for vendor, row in rows.items():
        if vendor in deferred and row.status != DeferralStatus.EXPIRED:
            row.status, row.reason, row.updated_at = (
                DeferralStatus.WAITING,
                deferred[vendor][:255],
                now,
            )
    healed = [v for v, row in rows.items() if v not in deferred and row.status in LIVE]
    for vendor in healed:
        row = rows[vendor]
        row.status, row.healed_at, row.updated_at = DeferralStatus.HEALED, now, now
    if healed:
        item = session.get_one(RunItem, item_id)
        item.healed_at = now
        item.history = with_event(item.history or [], {"event": "healed", "vendors": healed})
        metrics.count_healed(rows[healed[0]].kind, healed)
    return healed


def drop_for(session: Session, item_id: int) -> None:
    """The item ended in a way no vendor's return can mend (it died): its deferrals expire."""
    session.execute(
        update(Deferral)
        .where(Deferral.item_id == item_id, Deferral.status.in_(LIVE))
        .values(status=DeferralStatus.EXPIRED, updated_at=utcnow())
    )


def drop_vendors(item_id: int, vendors: list[str]) -> None:
    """These deferrals of the item are moot (its outcome no longer shows them): expired."""
    with session_scope() as session:
        session.execute(
            update(Deferral)
            .where(Deferral.item_id == item_id, Deferral.vendor.in_(vendors))
            .values(status=DeferralStatus.EXPIRED, updated_at=utcnow())
        )


def due(now: datetime, *, tenant_id: int | None = None) -> list[tuple[int, str]]:
    """(tenant, vendor) pairs with deferrals waiting and due for another try."""
    query = (
        select(Deferral.tenant_id, Deferral.vendor)
        .where(Deferral.status == DeferralStatus.WAITING, Deferral.next_try_at <= now)
        .group_by(Deferral.tenant_id, Deferral.vendor)
    )
    if tenant_id is not None:
        query = query.where(Deferral.tenant_id == tenant_id)
    with session_scope() as session:
        return [(int(t), str(v)) for t, v in session.execute(query).all()]


def claim(
    tenant_id: int, vendor: str, now: datetime, *, backoff_s: float, limit: int = 500
) -> list[Deferral]:
    """Take the pair's due deferrals for a heal: each becomes `healing`, counts an attempt,
    and is not due again before a backoff that doubles with its attempts (in case the heal
    is lost or the vendor fails again)."""
    with session_scope() as session:
        rows = list(
            session.scalars(
                select(Deferral)
                .where(
                    Deferral.tenant_id == tenant_id,
                    Deferral.vendor == vendor,
                    Deferral.status == DeferralStatus.WAITING,
                    Deferral.next_try_at <= now,
                )
                .order_by(Deferral.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.attempts += 1
            row.status = DeferralStatus.HEALING
            row.next_try_at = now + timedelta(seconds=backoff_s * 2 ** (row.attempts - 1))
            row.updated_at = now
        return rows


def expire(now: datetime, *, window_s: float, max_attempts: int) -> int:
    """Give up on deferrals past the healing window or out of attempts (their items stay
    degraded, with their reasons); how many."""
    with session_scope() as session:
        gone = session.execute(
            update(Deferral)
            .where(
                Deferral.status == DeferralStatus.WAITING,
                (Deferral.created_at < now - timedelta(seconds=window_s))
                | (Deferral.attempts >= max_attempts),
            )
            .values(status=DeferralStatus.EXPIRED, updated_at=now)
        )
        return int(gone.rowcount)  # type: ignore[attr-defined]


def release_stale(now: datetime) -> int:
    """A heal that finished without settling them (the item finished by a path that says
    nothing of its vendors) leaves deferrals `healing`: past their next try they wait
    again, to be claimed anew. One whose item is still open is left alone — its heal is
    under way (or lost, and the reconciler re-drives it)."""
    finished = select(RunItem.id).where(
        RunItem.id == Deferral.item_id, RunItem.status.not_in(OPEN_ITEM_STATUSES)
    )
    with session_scope() as session:
        back = session.execute(
            update(Deferral)
            .where(
                Deferral.status == DeferralStatus.HEALING,
                Deferral.next_try_at <= now,
                finished.exists(),
            )
            .values(status=DeferralStatus.WAITING, updated_at=now)
        )
        return int(back.rowcount)  # type: ignore[attr-defined]


def waiting_of(item_ids: list[int]) -> dict[int, dict[str, str]]:
    """For each item, the vendors it still waits for (vendor → reason)."""
    found: dict[int, dict[str, str]] = {}
    with session_scope() as session:
        rows = session.execute(
            select(Deferral.item_id, Deferral.vendor, Deferral.reason).where(
                Deferral.item_id.in_(item_ids), Deferral.status.in_(LIVE)
            )
        ).all()
    for item_id, vendor, reason in rows:
        found.setdefault(int(item_id), {})[str(vendor)] = str(reason)
    return found


def counts(run_id: uuid.UUID) -> dict[str, int]:
    """A run's deferrals by status."""
    with session_scope() as session:
        rows = session.execute(
            select(Deferral.status, func.count())
            .where(Deferral.run_id == run_id)
            .group_by(Deferral.status)
        ).all()
    return {str(status): int(n) for status, n in rows}
