"""The one way this product opens a Redis connection for its own state (not the broker's).

Timeouts are short and redis-py's retry is cut to a single immediate one: when Redis is
down, breaker and bulkhead code must find out in milliseconds and fall back, not stall a
task for seconds inside redis-py's default exponential retry.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


@lru_cache(maxsize=8)
def redis_for(url: str, socket_timeout_s: float = 0.5) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
