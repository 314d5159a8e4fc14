"""What a breaker storage promises: five atomic operations and the values they trade.

`DistributedCircuitBreaker` speaks only this contract, so the same breaker runs on Redis
(every worker process shares one state) and in memory (the embedded, single-process mode).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from enum import IntEnum

import pybreaker

from pipeline.settings import BreakerConfig

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


class Verdict(IntEnum):
    CALL = 0  # closed: go ahead
    PROBE = 1  # half-open: go ahead as one of the few allowed probes
    REJECT = 2  # open (or probes busy): do not call the vendor


@dataclass(frozen=True, slots=True)
class PaceFields:
    """The pair's pacing state (`pipeline.resilience.pacing`) as admit's read found it: it
    lives in the breaker's hash so that the one read serves both. `rate` 0: not paced."""

    rate: float = 0.0
    hold_until_ms: int = 0

    @property
    def active(self) -> bool:
        return self.rate > 0


NOT_PACED = PaceFields()


@dataclass(frozen=True, slots=True)
class Ticket:
    """What `admit` decided for one call; handed back when recording its outcome."""

    verdict: Verdict
    generation: int
    failures: int = 0
    retry_in_s: float = 0.0
    probe_id: str = ""
    moved_from: str = ""
    degraded: bool = False  # storage unreachable: the call goes through as if closed
    pace: PaceFields | None = None  # None: this admit did not read the pacing fields

    @property
    def admitted(self) -> bool:
        return self.verdict != Verdict.REJECT


@dataclass(frozen=True, slots=True)
class Outcome:
    """The state after an operation, and the state it moved from ('' if it did not move)."""

    state: str
    moved_from: str = ""


NO_CHANGE = Outcome("", "")
DEGRADED = Ticket(Verdict.CALL, -1, degraded=True)


class BreakerStorage(pybreaker.CircuitBreakerStorage):
    """State of one (tenant, vendor) breaker.

    Every outcome carries the generation seen at admit; a generation bumps on each
    transition, so an outcome from before a transition (a slow call admitted while closed,
    finishing after the breaker opened) changes nothing.
    """

    @abstractmethod
    def admit(self, config: BreakerConfig, now: float) -> Ticket: ...

    @abstractmethod
    def record_failure(self, ticket: Ticket, config: BreakerConfig, now: float) -> Outcome: ...

    @abstractmethod
    def record_success(self, ticket: Ticket, config: BreakerConfig) -> Outcome: ...

    @abstractmethod
    def release(self, ticket: Ticket) -> None:
        """Give back a probe slot whose call ended in a neutral error (429, 4xx)."""

    @abstractmethod
    def force(self, state: str, now: float) -> str:
        """Set the state by hand (operator reset / maintenance); returns the state before."""

    # pybreaker's mutators are replaced by the operations above; fail loudly if called.
    def increment_counter(self) -> None:
        raise NotImplementedError("use record_failure(): counting and tripping are one step")

    def reset_counter(self) -> None:
        raise NotImplementedError("use record_success()")

    def increment_success_counter(self) -> None:
        raise NotImplementedError("use record_success()")

    def reset_success_counter(self) -> None:
        raise NotImplementedError("use record_success()")
