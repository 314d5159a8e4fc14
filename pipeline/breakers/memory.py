"""Breaker state in process memory, for the embedded single-process mode (no Redis).

The same operations and the same rules as the Redis scripts (`lua/*.lua`), made atomic by
one lock per breaker instead of by Redis. Threads of one process share it; other processes
do not — which is why production uses `RedisBreakerStorage`.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from pipeline.breakers.contract import (
    CLOSED,
    HALF_OPEN,
    NO_CHANGE,
    OPEN,
    BreakerStorage,
    Outcome,
    Ticket,
    Verdict,
)
from pipeline.settings import BreakerConfig


class MemoryBreakerStorage(BreakerStorage):
    def __init__(self) -> None:
        super().__init__("memory-atomic")
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._generation = 0
        self._probes: dict[str, float] = {}  # probe id -> lease expiry

    def admit(self, config: BreakerConfig, now: float) -> Ticket:
        with self._lock:
            if self._state == CLOSED:
                return Ticket(Verdict.CALL, self._generation, failures=self._failures)
            moved_from = ""
            if self._state == OPEN:
                reopen_at = self._opened_at + config.cool_off_s
                if now < reopen_at:
                    return Ticket(Verdict.REJECT, self._generation, retry_in_s=reopen_at - now)
                self._move(HALF_OPEN)
                moved_from = OPEN
            self._probes = {p: until for p, until in self._probes.items() if until > now}
            if len(self._probes) < config.half_open_max_calls:
                probe_id = uuid.uuid4().hex
                self._probes[probe_id] = now + config.probe_lease_s
                return Ticket(
                    Verdict.PROBE, self._generation, probe_id=probe_id, moved_from=moved_from
                )
            return Ticket(Verdict.REJECT, self._generation, moved_from=moved_from)

    def record_failure(self, ticket: Ticket, config: BreakerConfig, now: float) -> Outcome:
        with self._lock:
            self._probes.pop(ticket.probe_id, None)
            if ticket.generation != self._generation:
                return NO_CHANGE
            if self._state == CLOSED:
                self._failures += 1
                if self._failures >= config.error_threshold:
                    self._move(OPEN, opened_at=now)
                    return Outcome(OPEN, CLOSED)
            elif self._state == HALF_OPEN and ticket.probe_id:
                self._move(OPEN, opened_at=now)
                return Outcome(OPEN, HALF_OPEN)
            return NO_CHANGE

    def record_success(self, ticket: Ticket, config: BreakerConfig) -> Outcome:
        with self._lock:
            self._probes.pop(ticket.probe_id, None)
            if ticket.generation != self._generation:
                return NO_CHANGE
            if self._state == CLOSED:
                self._failures = 0
            elif self._state == HALF_OPEN and ticket.probe_id:
                self._successes += 1
                if self._successes >= config.success_threshold:
                    self._move(CLOSED)
                    return Outcome(CLOSED, HALF_OPEN)
            return NO_CHANGE

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self._probes.pop(ticket.probe_id, None)

    def force(self, state: str, now: float) -> str:
        with self._lock:
            before = self._state
            self._move(state, opened_at=now)
            return before

    def _move(self, state: str, *, opened_at: float | None = None) -> None:
        """Caller holds the lock. Every transition starts a new generation."""
        self._state = state
        self._failures = self._successes = 0
        self._probes.clear()
        self._generation += 1
        if opened_at is not None:
            self._opened_at = opened_at

    # -- pybreaker's storage contract (reads) ------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        raise NotImplementedError("use force()")

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return datetime.fromtimestamp(self._opened_at, UTC) if self._opened_at else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        raise NotImplementedError("use force()")
