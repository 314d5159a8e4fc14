"""Every breaker with state in Redis, read without changing anything (for metrics, operators).

A breaker gets a hash the first time a failure is counted or a state is forced; one that
never saw a failure has none and is closed. Reading walks the keys with SCAN (never KEYS, so
Redis keeps serving while a large keyspace is read) and fetches each batch's fields in one
pipelined round trip. The answer is a snapshot: each breaker's fields are read atomically,
but breakers move while the walk goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

import redis

from pipeline.breakers.contract import CLOSED

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True)
class BreakerSnapshot:
    """One (tenant, vendor) breaker as Redis holds it."""

    tenant_id: int
    vendor: str
    state: str  # closed | open | half-open
    failures: int  # consecutive failures counted while closed
    opened_at: datetime | None  # when it last opened (or was forced to a state)


def list_breakers(
    client: redis.Redis, prefix: str, *, tenant_id: int | None = None, batch: int = 500
) -> Iterator[BreakerSnapshot]:
    """Yield every breaker stored under `prefix` (only `tenant_id`'s when given).

    Raises `redis.RedisError` when Redis cannot be read: a caller showing state must not
    mistake "unknown" for "closed".
    """
    head = _GLOB_SPECIAL.sub(r"\\\1", prefix) + ":cb:"
    pattern = f"{head}{{{tenant_id}:*}}" if tenant_id is not None else f"{head}{{*}}"
    keys = client.scan_iter(match=pattern, count=batch)
    while chunk := list(islice(keys, batch)):
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hmget(key, "s", "f", "at")
        for key, (state, failures, opened_at) in zip(chunk, pipe.execute(), strict=True):
            parsed = _parse_key(key, prefix)
            if parsed is None:
                continue
            yield BreakerSnapshot(
                tenant_id=parsed[0],
                vendor=parsed[1],
                state=_text(state) or CLOSED,
                failures=int(failures or 0),
                opened_at=datetime.fromtimestamp(int(opened_at) / 1000.0, UTC)
                if opened_at
                else None,
            )


def _parse_key(key: bytes | str, prefix: str) -> tuple[int, str] | None:
    """'PREFIX:cb:{7:crm}' → (7, 'crm'); None for anything else (e.g. the probes set)."""
    text = _text(key)
    tag = text.removeprefix(f"{prefix}:cb:")
    if tag == text or not (tag.startswith("{") and tag.endswith("}")):
        return None
    tenant, _, vendor = tag[1:-1].partition(":")
    if not tenant.isdigit() or not vendor:
        return None
    return int(tenant), vendor


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""
