"""The `breaker_events` table: every breaker transition, written by the process that made it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from pipeline.breakers.events import BreakerTransition
from pipeline.db.engine import session_scope
from pipeline.db.models import BreakerEvent


def record_breaker_event(event: BreakerTransition) -> None:
    with session_scope() as session:
        session.add(
            BreakerEvent(
                tenant_id=int(event.tenant_id),
                vendor=event.vendor,
                from_state=event.from_state,
                to_state=event.to_state,
                at=event.at,
            )
        )


def breaker_events(tenant_id: int, vendor: str | None = None) -> list[BreakerEvent]:
    with session_scope() as session:
        query = select(BreakerEvent).where(BreakerEvent.tenant_id == tenant_id)
        if vendor is not None:
            query = query.where(BreakerEvent.vendor == vendor)
        return list(session.scalars(query.order_by(BreakerEvent.at, BreakerEvent.id)))


def last_transitions(since: datetime) -> list[BreakerEvent]:
    """Each (tenant, vendor)'s latest transition, among those since `since`."""
    with session_scope() as session:
        latest = (
            select(
                BreakerEvent.tenant_id, BreakerEvent.vendor, func.max(BreakerEvent.id).label("id")
            )
            .where(BreakerEvent.at >= since)
            .group_by(BreakerEvent.tenant_id, BreakerEvent.vendor)
            .subquery()
        )
        return list(
            session.scalars(select(BreakerEvent).join(latest, BreakerEvent.id == latest.c.id))
        )
