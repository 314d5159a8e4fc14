"""`pipeline.resilience.lease` on a real Redis (and the embedded mode's `MemoryRedis`), with
a TTL of 0.6 s, so "several TTLs" is seconds. Redis going away: a private redis-server,
killed for real, and the lease dated by a fake clock."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import LeaseLostError
from pipeline.memory_redis import MemoryRedis
from pipeline.resilience.lease import Lease, renewed
from tests.support.clock import FakeClock
from tests.support.processes import PrivateRedis, wait_until
from tests.support.stack import own_redis_url

TTL = 0.6


@pytest.fixture(params=["redis", "memory"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryRedis()
        return
    real = redis.Redis.from_url(own_redis_url())
    yield real
    for key in real.scan_iter(match="lease-test-*"):
        real.delete(key)
    real.close()


@pytest.fixture
def name() -> str:
    return f"lease-test-{uuid.uuid4().hex}"


def heartbeats(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"lease-heartbeat:{name}"]


def test_the_heartbeat_keeps_it_held_past_several_ttls(client: Any, name: str) -> None:
    holder = Lease(client, name, ttl_s=TTL)
    assert holder.acquire()
    with renewed(holder):
        started = time.monotonic()
        refusals = 0
        while time.monotonic() - started < 5 * TTL:
            assert not Lease(client, name, ttl_s=TTL).acquire(), "a second holder got in"
            refusals += 1
            time.sleep(0.05)  # the behaviour under test is time passing: poll it
        assert not holder.lost
        holder.check()
    assert refusals > 10
    assert Lease(client, name, ttl_s=TTL).acquire(), "released at the end of the block"


def test_without_a_heartbeat_it_lapses_within_its_ttl(client: Any, name: str) -> None:
    """The control for the test above: the key does expire, and the holder knows."""
    holder = Lease(client, name, ttl_s=TTL)
    assert holder.acquire()
    started = time.monotonic()
    wait_until(
        lambda: Lease(client, name, ttl_s=TTL).acquire(),
        timeout=5,
        interval=0.02,
        what="the unrenewed lease to lapse",
    )
    assert TTL * 0.5 < time.monotonic() - started < TTL + 1.5
    assert holder.lost, "past its TTL, unrenewed: the holder can no longer vouch for it"
    assert not holder.renew(), "another holder has it now"


def test_a_second_holder_is_refused_while_held_and_another_name_is_free(
    client: Any, name: str
) -> None:
    first, second = Lease(client, name, ttl_s=30), Lease(client, name, ttl_s=30)
    assert first.acquire()
    assert not second.acquire()
    assert Lease(client, f"{name}-other", ttl_s=30).acquire()
    second.release()  # never held: gives back nothing
    assert not Lease(client, name, ttl_s=30).acquire(), "still the first holder's"
    first.release()
    assert second.acquire()
    second.release()


def test_release_frees_it_at_once_and_stops_the_heartbeat(client: Any, name: str) -> None:
    holder = Lease(client, name, ttl_s=30)
    assert holder.acquire()
    with renewed(holder):
        assert len(heartbeats(name)) == 1
    assert heartbeats(name) == []
    assert Lease(client, name, ttl_s=30).acquire(), "free at once, not after the TTL"


def test_a_token_gone_is_noticed_and_the_new_holder_is_left_alone(client: Any, name: str) -> None:
    holder = Lease(client, name, ttl_s=TTL)
    assert holder.acquire()
    with renewed(holder):
        client.delete(name)  # as if it had expired through a long pause, or Redis restarted
        usurper = Lease(client, name, ttl_s=30)
        assert usurper.acquire()
        wait_until(lambda: holder.lost, timeout=5, interval=0.02, what="the loss to be seen")
        with pytest.raises(LeaseLostError, match=f"lease {name} lost: its token is gone") as lost:
            holder.check()
        assert lost.value.code == "LEASE_LOST"
        wait_until(lambda: not heartbeats(name), timeout=5, what="the heartbeat to give up")
    assert not Lease(client, name, ttl_s=30).acquire(), "the old holder released nothing"
    usurper.release()


def test_a_token_gone_is_noticed_within_a_third_of_the_ttl(client: Any, name: str) -> None:
    holder = Lease(client, name, ttl_s=3.0)
    assert holder.acquire()
    with renewed(holder):
        client.delete(name)
        started = time.monotonic()
        wait_until(lambda: holder.lost, timeout=10, interval=0.02, what="the loss to be seen")
        assert time.monotonic() - started < 1.0 + 0.5, "at the next heartbeat (every 1 s)"


def short_timeouts(server: PrivateRedis) -> redis.Redis:
    return redis.Redis(
        port=server.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


def test_redis_unreachable_for_a_ttl_loses_it_and_its_return_does_not_undo_that(
    private_redis: PrivateRedis,
) -> None:
    clock = FakeClock()
    holder = Lease(short_timeouts(private_redis), "lease-test-x", ttl_s=15, clock=clock)
    assert holder.acquire()
    clock.advance(10)
    assert holder.renew(), "renewed: good for 15 s from now"
    private_redis.stop()

    clock.advance(5)
    assert not holder.renew(), "Redis did not answer"
    assert not holder.lost, "the key cannot have expired yet: keep working"
    holder.check()
    clock.advance(9.9)
    assert not holder.lost
    clock.advance(0.1)
    assert holder.lost, "15 s since the last renewal was sent: the key may be gone"
    with pytest.raises(LeaseLostError, match="not renewed within its TTL"):
        holder.check()

    private_redis.start()  # empty: our key died with it
    assert not holder.renew()
    assert holder.lost, "once lost, lost: someone else may have taken it meanwhile"


def test_the_heartbeat_notices_redis_gone_within_about_a_ttl(
    private_redis: PrivateRedis,
) -> None:
    holder = Lease(short_timeouts(private_redis), "lease-test-y", ttl_s=1.8)
    assert holder.acquire()
    with renewed(holder):
        private_redis.stop()
        stopped = time.monotonic()
        assert not holder.lost, "at least two thirds of a TTL are left"
        wait_until(lambda: holder.lost, timeout=10, interval=0.02, what="the loss to be seen")
        assert time.monotonic() - stopped < 1.8 + 0.5
