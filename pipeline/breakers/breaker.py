"""A `pybreaker.CircuitBreaker` whose every decision is one atomic step in shared storage.

pybreaker's own state classes read state, decide in Python, then write — fine in one process,
a race across many. This subclass keeps pybreaker's public face (`call`, `calling`, `state`,
`fail_counter`, `open`/`close`, listeners with `before_call`/`success`/`failure`/
`state_change`) and replaces the decide-and-write part with the storage's scripts. It holds
no lock around the vendor call, so threads of one process do not queue behind each other.

Outcomes are judged by the error's own `counts_as_failure` (see `pipeline.errors`):
rate limits, client errors and auth errors are neutral — they neither count as failures nor
end a failure streak — and free a probe slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker

from pipeline.breakers.storage import CLOSED, HALF_OPEN, OPEN, Outcome, RedisBreakerStorage
from pipeline.errors import CircuitOpenError
from pipeline.settings import BreakerConfig

T = TypeVar("T")


def counts_as_failure(exc: BaseException) -> bool:
    """Only real exceptions that say they count (or don't say: unknown errors count)."""
    return isinstance(exc, Exception) and getattr(exc, "counts_as_failure", True)


class DistributedCircuitBreaker(pybreaker.CircuitBreaker):
    def __init__(
        self,
        storage: RedisBreakerStorage,
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
        self._store = storage
        super().__init__(
            fail_max=config.error_threshold,
            reset_timeout=config.cool_off_s,
            success_threshold=config.success_threshold,
            exclude=[lambda exc: not counts_as_failure(exc)],
            listeners=list(listeners),
            state_storage=storage,
            name=f"{tenant_id}:{vendor}",
        )

    # -- calls -------------------------------------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        store, config = self._store, self.config
        ticket = store.admit(config, self.clock())
        if ticket.moved_from:
            self._announce(Outcome(HALF_OPEN, ticket.moved_from))
        if not ticket.admitted:
            raise CircuitOpenError(
                f"circuit open for {self.vendor} (tenant {self.tenant_id})",
                vendor=self.vendor,
                details={"tenant_id": self.tenant_id, "retry_in_s": ticket.retry_in_s},
            )
        for listener in self._listeners:
            listener.before_call(self, func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            if counts_as_failure(exc):
                outcome = store.record_failure(ticket, config, self.clock())
                for listener in self._listeners:
                    listener.failure(self, exc)
                self._announce(outcome)
            else:
                store.release(ticket)
            raise
        outcome = store.record_success(ticket, config)
        for listener in self._listeners:
            listener.success(self)
        self._announce(outcome)
        return result

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
