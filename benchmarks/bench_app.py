"""The production Celery app plus one no-op task, for `benchmarks/enrichment_throughput.py`.

Started as `celery -A benchmarks.bench_app worker ...` so the enrichment steps and the
baseline run in the same worker, with the same broker, result backend, acks, prefetch,
events and logging settings. `bench.noop` is the baseline's unit of work: a task that does
nothing but take and return its argument; with `done_key` it also counts itself finished in
Redis (one INCR), which is how the benchmark sees the last task of each bare chain end.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.settings import get_settings
from workers.app import app

__all__ = ["app", "noop"]

NOOP = "bench.noop"
_counter: redis.Redis | None = None


@app.task(name=NOOP, ignore_result=True)  # like the enrichment steps: no result backend
def noop(value: Any = None, done_key: str | None = None) -> Any:
    """Return `value`; with `done_key`, INCR that key first (the chain's last task)."""
    global _counter
    if done_key is not None:
        if _counter is None:
            _counter = redis.Redis.from_url(get_settings().redis_url)
        _counter.incr(done_key)
    return value
