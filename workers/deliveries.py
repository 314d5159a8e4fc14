"""How often each attempt of a task has been delivered: the guard against poison messages.

With late acks and `reject_on_worker_lost`, a task whose worker process dies is put back
on the queue — right for a worker killed by a deploy, endless for a message that kills
every worker that takes it. Each attempt (task id, retry number) counts its redeliveries in
Redis (the broker marks a message it puts back `redelivered`; a first delivery costs
nothing); past `TASK_MAX_DELIVERIES` deliveries the message is dead-lettered
(`worker_lost`) instead of run. The count outlives the broker's visibility timeout, then
expires by itself. If Redis is unreachable the task runs: the guard must never stop
healthy work.
"""

from __future__ import annotations

from typing import Any

import redis
import structlog

from pipeline import dead_letters
from pipeline.correlation import HEADER
from pipeline.redis_client import redis_for
from pipeline.settings import get_settings

log = structlog.get_logger(__name__)


def delivered_too_often(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Count this delivery; True (and the task dead-lettered) if it is one too many."""
    request = task.request
    if request.called_directly or not request.id:
        return False
    if not (request.delivery_info or {}).get("redelivered"):
        return False  # a first delivery: nothing to count, no round trip on the healthy path
    settings = get_settings()
    if settings.embedded:
        return False
    key = f"{settings.redis_key_prefix}:redeliveries:{request.id}:{request.retries}"
    try:
        client = redis_for(settings.redis_url)
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, settings.broker_visibility_timeout_s * 2)
        deliveries = 1 + int(pipe.execute()[0])
    except redis.RedisError as exc:
        log.warning("deliveries.not_counted", error=type(exc).__name__)
        return False
    if deliveries <= settings.task_max_deliveries:
        return False
    dead_letters.record(
        task_id=request.id,
        task_name=task.name,
        args=list(args),
        kwargs=dict(kwargs),
        path="worker_lost",
        error_code="WORKER_LOST",
        message=(
            f"delivered {deliveries} times; each time the worker process running it died "
            f"(TASK_MAX_DELIVERIES={settings.task_max_deliveries})"
        ),
        attempts=int(request.retries or 0) + 1,
        correlation_id=getattr(request, HEADER, None) or (request.headers or {}).get(HEADER),
        options={"context": True, **({"chain": request.chain} if request.chain else {})},
    )
    return True
