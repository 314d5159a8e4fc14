"""The per-tenant token bucket on real Redis: shared by every limiter, on Redis's clock."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from pipeline.errors import TenantRateExceededError
from pipeline.resilience.rate_limit import TenantRateLimiter
from tests.support.stack import own_redis_url


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(own_redis_url())


def limiter(
    client: redis.Redis, prefix: str, sleeps: list[float], **kw: float
) -> TenantRateLimiter:
    def record(seconds: float) -> None:  # the wait under test (milliseconds), kept
        sleeps.append(seconds)
        time.sleep(seconds)

    return TenantRateLimiter(
        client,
        prefix=prefix,
        vendor="crm",
        rate_per_s=kw.get("rate", 10.0),
        burst=3,
        max_wait_s=kw.get("max_wait", 1.0),
        sleep=record,
    )


def test_a_burst_goes_at_once_and_the_next_request_is_told_to_wait(client: redis.Redis) -> None:
    prefix, sleeps = f"rl-{uuid.uuid4().hex[:6]}", []
    first, second = limiter(client, prefix, sleeps), limiter(client, prefix, sleeps)
    first.take(1)
    second.take(1)
    first.take(1)
    assert sleeps == [], "three requests fit the burst, whichever worker sends them"
    with pytest.raises(TenantRateExceededError) as raised:
        limiter(client, prefix, sleeps, max_wait=0.01).take(1)
    assert 0.05 < (raised.value.retry_after_s or 0) <= 0.1, "one token at 10/s"
    assert not raised.value.counts_as_failure
    client.delete(first.key(1))


def test_tenants_have_buckets_of_their_own(client: redis.Redis) -> None:
    prefix, sleeps = f"rl-{uuid.uuid4().hex[:6]}", []
    bucket = limiter(client, prefix, sleeps, max_wait=0.0)
    for _ in range(3):
        bucket.take(1)
    bucket.take(2)  # another tenant: a full bucket
    with pytest.raises(TenantRateExceededError):
        bucket.take(1)
    client.delete(bucket.key(1), bucket.key(2))


def test_a_short_wait_is_waited_within_the_bound(client: redis.Redis) -> None:
    prefix, sleeps = f"rl-{uuid.uuid4().hex[:6]}", []
    bucket = limiter(client, prefix, [], rate=100.0)
    for _ in range(3):
        bucket.take(7)
    waiting = limiter(client, prefix, sleeps, rate=100.0)
    waiting.take(7)
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.01, "asked to wait about one token"
    client.delete(bucket.key(7))
