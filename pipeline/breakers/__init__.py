"""Circuit breakers per (tenant, vendor), shared by every worker process through Redis.

    from pipeline.breakers import breaker_for
    breaker_for(tenant_id, "crm").call(push_contacts, batch)

`breaker_for` is the one breaker factory: thresholds come from settings (with per-vendor
overrides), state from Redis, transitions go to the log, the `breaker_events` table and the metrics.
One tenant's failures never touch another tenant's breaker: the key holds both ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import lru_cache

import pybreaker
import redis

from pipeline.breakers.breaker import DistributedCircuitBreaker
from pipeline.breakers.contract import BreakerStorage
from pipeline.breakers.events import (
    BreakerTransition,
    TransitionListener,
    TransitionSink,
    log_transition,
)
from pipeline.breakers.memory import MemoryBreakerStorage
from pipeline.breakers.storage import RedisBreakerStorage
from pipeline.settings import Settings, get_settings

__all__ = [
    "BreakerFactory",
    "BreakerTransition",
    "DistributedCircuitBreaker",
    "breaker_for",
    "configure_breakers",
    "factory",
]


class BreakerFactory:
    """Builds (and caches per process) the breaker of each (tenant, vendor).

    With a Redis client, state is shared by every process; with `client=None` it lives in
    this process's memory (the embedded mode). Building a breaker touches no storage, so a
    cache miss costs no round trip.
    """

    def __init__(
        self,
        client: redis.Redis | None,
        settings: Settings,
        *,
        sinks: Iterable[TransitionSink] = (log_transition,),
        clock: Callable[[], float] = time.time,
        cache_size: int = 65536,
    ) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.listeners = [TransitionListener(sink) for sink in sinks]
        self.get = lru_cache(maxsize=cache_size)(self._build)
        self._memory: dict[tuple[int, str], MemoryBreakerStorage] = {}

    def __call__(self, tenant_id: int, vendor: str) -> DistributedCircuitBreaker:
        return self.get(int(tenant_id), vendor)

    def storage(self, tenant_id: int, vendor: str) -> BreakerStorage:
        if self.client is None:  # state must outlive an evicted breaker object
            return self._memory.setdefault((tenant_id, vendor), MemoryBreakerStorage())
        return RedisBreakerStorage(
            self.client,
            prefix=self.settings.redis_key_prefix,
            tenant_id=tenant_id,
            vendor=vendor,
        )

    def memory_pairs(self) -> list[tuple[int, str]]:
        """The (tenant, vendor) pairs with state in this process's memory (embedded mode)."""
        return list(self._memory)

    def _build(self, tenant_id: int, vendor: str) -> DistributedCircuitBreaker:
        return DistributedCircuitBreaker(
            self.storage(tenant_id, vendor),
            self.settings.breaker_config(vendor),
            tenant_id=tenant_id,
            vendor=vendor,
            listeners=self.listeners,
            clock=self.clock,
        )


_factory: BreakerFactory | None = None


def configure_breakers(factory: BreakerFactory | None) -> None:
    """Install the factory `breaker_for` uses (None: rebuild from settings on next use)."""
    global _factory
    _factory = factory


def default_factory() -> BreakerFactory:
    from pipeline.db.breaker_events import record_breaker_event
    from pipeline.metrics import count_breaker_transition
    from pipeline.redis_client import redis_for

    settings = get_settings()
    client = None if settings.embedded else redis_for(settings.redis_url)
    sinks = (log_transition, record_breaker_event, count_breaker_transition)
    return BreakerFactory(client, settings, sinks=sinks)


def factory() -> BreakerFactory:
    """The factory `breaker_for` uses, built from settings on first use."""
    global _factory
    if _factory is None:
        _factory = default_factory()
    return _factory


def breaker_for(tenant_id: int, vendor: str) -> pybreaker.CircuitBreaker:
    """The circuit breaker guarding `vendor` for `tenant_id`, state shared through Redis."""
    return factory()(tenant_id, vendor)
