"""Putting breakers back after their Redis restarted empty.

Breaker state lives in Redis; a Redis that keeps nothing on disk forgets every open breaker
when it restarts, and a vendor that is still down would get a full error threshold of calls
again from every tenant. Every transition is also in `breaker_events` (Postgres), so the
reconciler, once it finds that Redis restarted empty, puts each breaker whose last
transition left it open or half-open back to open, as of that transition: its cool-off
runs on from where it was (one already over lets the next call probe at once). Restoring
writes storage directly: it is not a transition, so it is logged but not announced again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from pipeline.breakers import factory
from pipeline.breakers.contract import HALF_OPEN, OPEN
from pipeline.db.breaker_events import last_transitions

log = structlog.get_logger(__name__)
HORIZON = timedelta(days=7)  # older transitions are history: their breakers were probed since


def restore_open_breakers(now: datetime) -> int:
    """Re-open, as of when they opened, the breakers Postgres last saw open; how many."""
    made = factory()
    restored = 0
    for event in last_transitions(now - HORIZON):
        if event.to_state not in (OPEN, HALF_OPEN):
            continue
        made.storage(event.tenant_id, event.vendor).force(OPEN, event.at.timestamp())
        restored += 1
    if restored:
        log.warning("breakers.restored", breakers=restored)
    return restored
