"""The embedded mode's in-memory Redis answers our scripts exactly as Redis does.

Each case runs twice: on a real Redis (the tests' own db) and on `MemoryRedis`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import LockError

from pipeline.crm_tokens import SCRIPTS
from pipeline.memory_redis import MemoryRedis
from pipeline.resilience.rate_limit import SCRIPT
from tests.support.stack import own_redis_url


@pytest.fixture(params=["redis", "memory"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryRedis()
        return
    real = redis.Redis.from_url(own_redis_url())
    yield real
    for key in real.scan_iter(match="mr-test-*"):
        real.delete(key)


def text(value: Any) -> Any:
    if isinstance(value, list):
        return [text(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def test_the_token_scripts_single_flight_cache_and_flag(client: Any) -> None:
    base = f"mr-test-{uuid.uuid4().hex}"
    keys = [base, f"{base}:lock", f"{base}:attention"]
    fetch_or_lock = client.register_script(SCRIPTS["fetch_or_lock"])
    store = client.register_script(SCRIPTS["store"])
    compare_and_delete = client.register_script(SCRIPTS["compare_and_delete"])

    assert text(fetch_or_lock(keys=keys, args=["me", 5000])) == [2]
    assert text(fetch_or_lock(keys=keys, args=["you", 5000])) == [0], "someone holds the lock"
    assert store(keys=keys[:2], args=["you", "tok-x", 60000]) == 0, "not your lock to free"
    assert store(keys=keys[:2], args=["me", "tok-1", 60000]) == 1
    assert text(fetch_or_lock(keys=keys, args=["you", 5000])) == [1, "tok-1"]
    assert compare_and_delete(keys=keys[:1], args=["tok-old"]) == 0
    assert compare_and_delete(keys=keys[:1], args=["tok-1"]) == 1
    client.set(keys[2], "cred-7")
    assert text(fetch_or_lock(keys=keys, args=["me", 5000])) == [3, "cred-7"]


def test_the_token_bucket_lets_a_burst_through_then_asks_to_wait(client: Any) -> None:
    take = client.register_script(SCRIPT)
    key = f"mr-test-{uuid.uuid4().hex}"
    assert [take(keys=[key], args=[10.0, 2, 1]) for _ in range(2)] == [0, 0]
    wait_ms = int(take(keys=[key], args=[10.0, 2, 1]))
    assert 0 < wait_ms <= 100, "one token at 10/s"


def test_a_lock_is_held_once_and_released_only_by_its_owner(client: Any) -> None:
    name = f"mr-test-{uuid.uuid4().hex}"
    first = client.lock(name, timeout=30, blocking=False)
    second = client.lock(name, timeout=30, blocking=False)
    assert first.acquire() and not second.acquire()
    with pytest.raises(LockError):
        second.release()
    first.release()
    assert second.acquire()
    second.release()


def test_a_script_without_a_twin_fails_loudly() -> None:
    with pytest.raises(NotImplementedError, match="no in-memory twin"):
        MemoryRedis().register_script("-- something new\nreturn 1")
