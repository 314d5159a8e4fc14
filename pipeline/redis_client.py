"""The one way this product opens a Redis connection for its own state (not the broker's).

Timeouts are short and redis-py's own retries are off: a retried script could run twice
(a failure counted twice), and a Redis that is down must cost one short timeout before the
caller falls back — not seconds inside redis-py's default exponential retry.

`memory://` (the embedded mode) gives this process's in-memory stand-in
(`pipeline.memory_redis`), which speaks the subset of commands and scripts we use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.settings import get_settings


@lru_cache(maxsize=8)
def redis_for(url: str) -> redis.Redis:
    if url.startswith("memory://"):
        from pipeline.memory_redis import MemoryRedis

        return cast(redis.Redis, MemoryRedis())  # the subset we use, duck-typed
    timeout = get_settings().redis_socket_timeout_s
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
