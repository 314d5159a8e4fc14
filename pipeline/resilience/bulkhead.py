"""Bulkhead: a cap on calls in flight to each vendor, across every worker process together.

One slow vendor must not take every worker: when its calls hang, at most `limit` workers
wait on it and the rest keep serving other vendors. Slots are Redis sorted-set entries with
an expiry, so a worker killed mid-call cannot leak its slot. A caller that finds no free slot
within `wait_s` gets `BulkheadFullError` — retryable, and neutral to the circuit breaker
(the vendor did nothing wrong). If Redis is unreachable the call goes ahead without a slot:
the bulkhead protects capacity, it must not become an outage of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import structlog

from pipeline.errors import BulkheadFullError

log = structlog.get_logger(__name__)
_ACQUIRE = (Path(__file__).parent / "lua" / "bulkhead_acquire.lua").read_text()


class Bulkhead:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        limit_for: Callable[[str], int],
        wait_s: float,
        slot_ttl_s: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._limit_for = limit_for
        self._wait_s = wait_s
        self._ttl_ms = int(slot_ttl_s * 1000)
        self._clock = clock
        self._sleep = sleep
        self._acquire = client.register_script(_ACQUIRE)

    def key(self, vendor: str) -> str:
        return f"{self._prefix}:bh:{{{vendor}}}"

    @contextmanager
    def slot(self, vendor: str) -> Iterator[None]:
        """Hold one of `vendor`'s slots for the duration of the block."""
        slot_id = uuid.uuid4().hex
        held = self._take(vendor, slot_id)
        try:
            yield
        finally:
            if held:
                self._give_back(vendor, slot_id)

    def in_flight(self, vendor: str) -> int:
        now_ms = int(self._clock() * 1000)
        return int(self._redis.zcount(self.key(vendor), now_ms, "+inf"))

    def _take(self, vendor: str, slot_id: str) -> bool:
        key, limit = self.key(vendor), self._limit_for(vendor)
        deadline = self._clock() + self._wait_s
        pause = 0.005
        while True:
            try:
                now_ms = int(self._clock() * 1000)
                if self._acquire(keys=[key], args=[now_ms, self._ttl_ms, limit, slot_id]):
                    return True
            except redis.RedisError as exc:
                log.warning("bulkhead.redis_unavailable", vendor=vendor, error=str(exc))
                return False
            if self._clock() >= deadline:
                raise BulkheadFullError(
                    f"{vendor}: all {limit} slots busy for {self._wait_s:.2f}s",
                    vendor=vendor,
                    details={"limit": limit},
                )
            self._sleep(pause)
            pause = min(pause * 2, 0.05)

    def _give_back(self, vendor: str, slot_id: str) -> None:
        try:
            self._redis.zrem(self.key(vendor), slot_id)
        except redis.RedisError as exc:  # the slot expires by itself
            log.warning("bulkhead.release_failed", vendor=vendor, error=str(exc))
