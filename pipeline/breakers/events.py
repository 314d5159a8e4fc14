"""Breaker transitions as plain events, delivered to sinks (log line, `breaker_events` row).

Only the process whose script made a transition announces it, so each transition is
reported once across all workers. A sink that fails is logged and skipped: recording an
event must never fail the vendor call that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pybreaker
import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BreakerTransition:
    tenant_id: int
    vendor: str
    from_state: str
    to_state: str
    at: datetime


TransitionSink = Callable[[BreakerTransition], None]


class TransitionListener(pybreaker.CircuitBreakerListener):
    """Adapts pybreaker's `state_change` callback to a `TransitionSink`."""

    def __init__(self, sink: TransitionSink) -> None:
        self.sink = sink

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        event = BreakerTransition(
            tenant_id=int(cb.tenant_id),
            vendor=cb.vendor,
            from_state=old_state.name if old_state else "",
            to_state=new_state.name,
            at=cb.transition_time(),
        )
        try:
            self.sink(event)
        except Exception as exc:
            log.warning("breaker.event_sink_failed", sink=repr(self.sink), error=str(exc))


def log_transition(event: BreakerTransition) -> None:
    log.warning(
        "breaker.transition",
        tenant_id=event.tenant_id,
        vendor=event.vendor,
        from_state=event.from_state,
        to_state=event.to_state,
        at=event.at.isoformat(),
    )
