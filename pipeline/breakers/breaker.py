"""A `pybreaker.CircuitBreaker` whose every decision is one atomic step in shared storage.

pybreaker's own state classes read state, decide in Python, then write — fine in one process,
a race across many. This subclass keeps pybreaker's public face (`call`, `calling`, `state`,
`fail_counter`, `open`/`close`/`half_open`, listeners with `before_call`/`success`/
`failure`/`state_change`) and replaces the decide-and-write part with the storage's
operations. It holds no lock around the vendor call, so threads of one process do not
queue behind each other, and building one touches no storage (a breaker per tenant and
vendor is cheap to make on a cache miss).

Outcomes are judged by the error's own `counts_as_failure` (see `pipeline.errors`):
rate limits, client errors, auth errors and a full bulkhead are neutral — they neither
count as failures nor end a failure streak — and free a probe slot. An exempt vendor's
breaker never consults storage at all: it never opens, and costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker

from pipeline.breakers.contract import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerStorage,
    Outcome,
    Ticket,
)
from pipeline.errors import CircuitOpenError
from pipeline.settings import BreakerConfig

T = TypeVar("T")
STATES = (CLOSED, OPEN, HALF_OPEN)


def counts_as_failure(exc: BaseException) -> bool:
    """Only real exceptions that say they count (or don't say: unknown errors count)."""
    return isinstance(exc, Exception) and getattr(exc, "counts_as_failure", True)


class DistributedCircuitBreaker(pybreaker.CircuitBreaker):
    def __init__(
        self,
        storage: BreakerStorage,
        config: BreakerConfig,
        *,
        tenant_id: int,
        vendor: str,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.vendor = vendor
        self.config = config
        self.clock = clock
        # pybreaker's constructor reads the state once; let it read a local placeholder so
        # that building a breaker costs no round trip, then put the real storage in place.
        super().__init__(
            fail_max=config.error_threshold,
            reset_timeout=config.cool_off_s,
            success_threshold=config.success_threshold,
            listeners=list(listeners),
            state_storage=pybreaker.CircuitMemoryStorage(CLOSED),
            name=f"{tenant_id}:{vendor}",
        )
        self._store = storage
        self._state_storage = storage

    # -- calls -------------------------------------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.config.exempt:
            return func(*args, **kwargs)
        ticket = self._admit()
        for listener in self._listeners:
            listener.before_call(self, func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[Ticket | None]:
        """`with breaker.calling() as ticket: ...` — the block is the guarded call; the
        ticket (None for an exempt vendor) carries what admit read, pacing fields included."""
        if self.config.exempt:
            yield None
            return
        ticket = self._admit()
        try:
            yield ticket
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)

    def call_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("DistributedCircuitBreaker guards synchronous calls only")

    def _admit(self) -> Ticket:
        ticket = self._store.admit(self.config, self.clock())
        if ticket.moved_from:
            self._announce(Outcome(HALF_OPEN, ticket.moved_from))
        if not ticket.admitted:
            raise CircuitOpenError(
                f"circuit open for {self.vendor} (tenant {self.tenant_id})",
                vendor=self.vendor,
                details={"tenant_id": self.tenant_id, "retry_in_s": ticket.retry_in_s},
            )
        return ticket

    def _settle(self, ticket: Ticket, exc: BaseException | None) -> None:
        if exc is None:
            outcome = self._store.record_success(ticket, self.config)
            for listener in self._listeners:
                listener.success(self)
        elif counts_as_failure(exc):
            outcome = self._store.record_failure(ticket, self.config, self.clock())
            for listener in self._listeners:
                listener.failure(self, exc)
        else:
            self._store.release(ticket)
            return
        self._announce(outcome)

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> pybreaker.CBStateType:
        """The state as storage has it now (no caching: another process may have moved it)."""
        return self._create_new_state(self.current_state)

    @state.setter
    def state(self, state: str) -> None:
        self._force(state)

    @property
    def fail_counter(self) -> int:
        return self._store.counter

    @property
    def success_counter(self) -> int:
        return self._store.success_counter

    def open(self) -> bool:
        self._force(OPEN)
        return True

    def half_open(self) -> None:
        self._force(HALF_OPEN)

    def close(self) -> None:
        self._force(CLOSED)

    def _force(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown breaker state {state!r}; expected one of {STATES}")
        before = self._store.force(state, self.clock())
        self._announce(Outcome(state, before if before != state else ""))

    def _announce(self, outcome: Outcome) -> None:
        if not outcome.moved_from:
            return
        old = self._create_new_state(outcome.moved_from)
        new = self._create_new_state(outcome.state)
        for listener in self._listeners:
            listener.state_change(self, old, new)

    def transition_time(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
