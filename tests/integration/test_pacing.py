"""Adaptive pacing per (tenant, vendor) on real Redis: the guard, the Lua scripts, processes.

Time is a fake clock (the pacer's sleep moves it), jitter a seeded rng: no test sleeps.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pipeline.breakers import BreakerFactory
from pipeline.errors import VendorPacedError, VendorRateLimitError, VendorServerError
from pipeline.resilience.bulkhead import Bulkhead
from pipeline.resilience.guard import VendorGuard, pacer_from_settings
from pipeline.resilience.pacing import Pacer, Pass
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import Settings, get_settings, load_settings
from tests.support.clock import FakeClock
from tests.support.processes import PrivateRedis

pytestmark = pytest.mark.usefixtures("integration_env")
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload([__name__])
T0 = 1_800_000_000.0
VENDOR = "search"


class Clock(FakeClock):
    """A fake clock whose `sleep` moves it (and remembers each sleep)."""

    def __init__(self, now: float = T0) -> None:
        super().__init__(now)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class Vendor:
    """Stands for one vendor endpoint: remembers when (by the fake clock) it was called."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def ok(self) -> str:
        self.calls.append(self.clock.now)
        return "ok"

    def throttle(self, retry_after_s: float | None) -> Callable[[], str]:
        def answer_429() -> str:
            self.calls.append(self.clock.now)
            raise VendorRateLimitError("429", vendor=VENDOR, retry_after_s=retry_after_s)

        return answer_429


def build(
    clock: Clock, client: redis.Redis | None = None, settings: Settings | None = None, **kw: Any
) -> tuple[VendorGuard, Pacer, BreakerFactory]:
    settings = settings or get_settings()
    client = client or redis.Redis.from_url(settings.redis_url)
    factory = BreakerFactory(client, settings, sinks=(), clock=clock)
    policy = RetryPolicy.from_settings(settings, rng=random.Random(20261123))
    pacer = pacer_from_settings(
        client, settings, policy=policy, clock=clock, sleep=clock.sleep, monotonic=clock
    )
    return VendorGuard(breakers=factory, pacer=pacer, **kw), pacer, factory


def rate(pacer: Pacer, tenant: int) -> float:
    return pacer.state(tenant, VENDOR).rate


def test_after_a_429_no_call_goes_out_before_retry_after_and_then_one_slot_apart(
    tenant: int,
) -> None:
    clock = Clock()
    guard, pacer, breakers = build(clock)
    vendor = Vendor(clock)
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, vendor.throttle(2.0))
    hold_until = pacer.state(tenant, VENDOR).hold_until_ms / 1000
    assert T0 + 2.0 <= hold_until <= T0 + 3.0, "Retry-After plus at most half of it"
    assert rate(pacer, tenant) == get_settings().pacing_ceiling_per_s / 2

    clock.advance(0.5)  # other calls of the pair are held back: no request is made
    for _ in range(3):
        with pytest.raises(VendorPacedError) as held:
            guard.call(tenant, VENDOR, vendor.ok)
    assert vendor.calls == [T0]
    assert held.value.retry_after_s == pytest.approx(hold_until - clock.now, abs=0.002)
    assert breakers(tenant, VENDOR).fail_counter == 0, "neither a 429 nor a hold counts"

    clock.now = hold_until - 0.8  # within PACING_MAX_WAIT_S: waits here, then calls
    assert guard.call(tenant, VENDOR, vendor.ok) == "ok"
    assert vendor.calls[-1] >= hold_until and clock.sleeps == [pytest.approx(0.8, abs=0.002)]
    for _ in range(5):
        guard.call(tenant, VENDOR, vendor.ok)
    gaps = [b - a for a, b in zip(vendor.calls[1:], vendor.calls[2:], strict=False)]
    assert all(0.09 <= gap <= 0.1001 for gap in gaps), gaps  # one slot at ~10/s apart


def test_successes_raise_the_rate_until_pacing_switches_itself_off(tenant: int) -> None:
    clock = Clock()
    guard, pacer, _ = build(clock)
    vendor = Vendor(clock)
    settings = get_settings()
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, vendor.throttle(1.0))
    clock.advance(1.5)  # past the hold
    rates = [rate(pacer, tenant)]
    while rates[-1] > 0 and len(rates) < 1000:
        guard.call(tenant, VENDOR, vendor.ok)
        rates.append(rate(pacer, tenant))
    successes = len(rates) - 1
    climbing = rates[:-1]
    assert climbing == sorted(climbing) and rates[-1] == 0
    # rate += increase/rate: rate^2 grows by ~2 x increase per success, from 10^2 to 20^2
    start, ceiling = settings.pacing_ceiling_per_s / 2, settings.pacing_ceiling_per_s
    expected = (ceiling**2 - start**2) / (2 * settings.pacing_increase_per_s)
    assert expected * 0.9 <= successes <= expected, successes

    sleeps_before = len(clock.sleeps)
    guard.call(tenant, VENDOR, vendor.ok)
    assert len(clock.sleeps) == sleeps_before, "pacing is off: no wait"
    fields = redis.Redis.from_url(settings.redis_url).hkeys(pacer.key(tenant, VENDOR))
    assert not {b"pr", b"pu", b"pt", b"pd"} & set(fields)


def test_a_quiet_pair_stops_being_paced(tenant: int) -> None:
    clock = Clock()
    guard, pacer, _ = build(clock)
    vendor = Vendor(clock)
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, vendor.throttle(1.0))
    clock.advance(1.5 + get_settings().pacing_quiet_s)
    guard.call(tenant, VENDOR, vendor.ok)
    assert rate(pacer, tenant) == 0 and clock.sleeps == []


def test_the_rate_is_cut_once_per_window_and_never_below_the_floor(tenant: int) -> None:
    clock = Clock()
    _, pacer, _ = build(clock)
    settings = get_settings()
    error = VendorRateLimitError("429", vendor=VENDOR, retry_after_s=0.0)
    in_flight = [pacer.admit(tenant, VENDOR, None) for _ in range(3)]  # sent together
    clock.advance(0.01)
    for sent in in_flight:
        pacer.throttled(tenant, VENDOR, error, sent)
    assert rate(pacer, tenant) == settings.pacing_ceiling_per_s * settings.pacing_decrease
    for expected in (5.0, 2.5, 1.25, 0.625, 0.5, 0.5):
        clock.advance(0.01)
        pacer.throttled(tenant, VENDOR, error, Pass(int(clock.now * 1000), paced=True))
        assert rate(pacer, tenant) == expected


def test_a_paced_call_the_vendor_refuses_otherwise_still_counts_for_the_breaker(
    tenant: int,
) -> None:
    clock = Clock()
    guard, _, breakers = build(clock)
    vendor = Vendor(clock)
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, vendor.throttle(0.5))
    clock.advance(0.6)

    def server_error() -> None:
        raise VendorServerError("503", vendor=VENDOR)

    with pytest.raises(VendorServerError):
        guard.call(tenant, VENDOR, server_error)
    assert breakers(tenant, VENDOR).fail_counter == 1


def test_an_exempt_vendor_with_no_breaker_read_is_paced_by_the_process_that_saw_its_429(
    tenant: int,
) -> None:
    clock = Clock()
    settings = load_settings(cb_global_exempt_vendors=VENDOR)
    guard, pacer, _ = build(clock, settings=settings)
    vendor = Vendor(clock)
    assert guard.call(tenant, VENDOR, vendor.ok) == "ok"
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, vendor.throttle(2.0))
    with pytest.raises(VendorPacedError):
        guard.call(tenant, VENDOR, vendor.ok)
    assert len(vendor.calls) == 2
    clock.now = pacer.state(tenant, VENDOR).hold_until_ms / 1000
    assert guard.call(tenant, VENDOR, vendor.ok) == "ok"


# -- across processes ---------------------------------------------------------------------


def call_at(results: Any, tenant: int, now: float, counter_key: str) -> None:
    """A child process: one guarded call at `now` (by its own fake clock)."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    guard, _, _ = build(Clock(now), client)

    def vendor_call() -> str:
        client.incr(counter_key)
        return "called"

    try:
        results.put(guard.call(tenant, VENDOR, vendor_call))
    except VendorPacedError as exc:
        results.put(f"paced {exc.retry_after_s:.3f}")


def in_child(tenant: int, now: float, counter_key: str) -> str:
    results = CTX.Queue()
    proc = CTX.Process(target=call_at, args=(results, tenant, now, counter_key))
    proc.start()
    outcome = results.get(timeout=60)
    proc.join(timeout=30)
    return str(outcome)


def test_a_429_seen_by_one_process_holds_back_the_others(tenant: int) -> None:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    counter_key = f"{settings.redis_key_prefix}:pacing-test:{tenant}"
    clock = Clock()
    guard, pacer, _ = build(clock, client)
    with pytest.raises(VendorRateLimitError):
        guard.call(tenant, VENDOR, Vendor(clock).throttle(2.0))
    hold_until = pacer.state(tenant, VENDOR).hold_until_ms / 1000

    outcome = in_child(tenant, T0 + 1.0, counter_key)
    assert outcome.startswith("paced ")
    assert float(outcome.split()[1]) == pytest.approx(hold_until - (T0 + 1.0), abs=0.002)
    assert in_child(tenant, hold_until + 0.001, counter_key) == "called"
    assert int(client.get(counter_key) or 0) == 1, "only the call after the hold went out"


# -- the cost of the healthy path ---------------------------------------------------------


class CountingConnection(redis.Connection):
    """Counts requests sent: one per command, one per pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {k: after[k] - before.get(k, 0) for k in after}
    return {k: n for k, n in changed.items() if n and k != "info"}


def test_a_healthy_call_costs_the_same_round_trips_with_pacing_as_without(tenant: int) -> None:
    """One HMGET (breaker state and pacing fields), then the bulkhead's two: pacing adds no
    request until the pair is throttled, and then only while it is paced."""
    private = PrivateRedis()
    try:
        pool = redis.ConnectionPool.from_url(private.url, connection_class=CountingConnection)
        client = redis.Redis(connection_pool=pool)
        settings = load_settings(redis_url=private.url)
        clock = Clock()
        slots = Bulkhead(client, prefix="p", limit_for=lambda v: 4, wait_s=0.1, slot_ttl_s=10)
        paced, _, _ = build(clock, client, settings, slots=slots.slot)
        unpaced = VendorGuard(
            breakers=BreakerFactory(client, settings, sinks=(), clock=clock), slots=slots.slot
        )
        vendor = Vendor(clock)
        n = 50

        def cost(guard: VendorGuard) -> tuple[float, dict[str, int]]:
            guard.call(tenant, VENDOR, vendor.ok)  # scripts loaded, connection made
            before, sent = commands(client), CountingConnection.sent
            for _ in range(n):
                guard.call(tenant, VENDOR, vendor.ok)
            requests = (CountingConnection.sent - sent) / n
            return requests, delta(before, commands(client))

        with_pacing, without_pacing = cost(paced), cost(unpaced)
        assert with_pacing == without_pacing
        requests, server = with_pacing
        assert requests == 3 and server["hmget"] == n, server  # HMGET, EVALSHA, ZREM

        with pytest.raises(VendorRateLimitError):
            paced.call(tenant, VENDOR, vendor.throttle(0.1))
        clock.advance(1.0)
        requests, _ = cost(paced)
        assert requests == 5, "while paced: + a slot script and a success script per call"
    finally:
        private.stop()
