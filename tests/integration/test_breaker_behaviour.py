"""The breaker's rules, run against both storages: Redis (shared by every worker process)
and memory (the embedded single-process mode). One suite, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis

from pipeline.breakers import BreakerFactory, BreakerTransition, DistributedCircuitBreaker
from pipeline.errors import (
    BulkheadFullError,
    CircuitOpenError,
    VendorAuthError,
    VendorClientError,
    VendorRateLimitError,
    VendorServerError,
)
from pipeline.settings import get_settings, load_settings
from tests.support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("integration_env")


class Breakers:
    """Breakers of one storage kind sharing one clock and one list of transitions."""

    def __init__(self, kind: str, **overrides: Any) -> None:
        self.clock = FakeClock()
        self.events: list[BreakerTransition] = []
        settings = load_settings(**overrides)
        client = redis.Redis.from_url(settings.redis_url) if kind == "redis" else None
        self.factory = BreakerFactory(
            client, settings, sinks=(self.events.append,), clock=self.clock
        )

    def __call__(self, tenant: int, vendor: str = "crm") -> DistributedCircuitBreaker:
        return self.factory(tenant, vendor)

    def moves(self, tenant: int, vendor: str = "crm") -> list[tuple[str, str]]:
        return [
            (e.from_state, e.to_state)
            for e in self.events
            if (e.tenant_id, e.vendor) == (tenant, vendor)
        ]


@pytest.fixture(params=["redis", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def breakers(kind: str) -> Breakers:
    return Breakers(kind)


def fail(exc_type: type[Exception] = VendorServerError) -> Callable[[], None]:
    def call() -> None:
        raise exc_type("vendor said no", vendor="crm")

    return call


def fail_times(
    breaker: DistributedCircuitBreaker, n: int, error: type[Exception] = VendorServerError
) -> None:
    for _ in range(n):
        with pytest.raises(error):
            breaker.call(fail(error))


def test_opens_after_the_threshold_and_then_calls_nobody(breakers: Breakers, tenant: int) -> None:
    breaker = breakers(tenant)
    fail_times(breaker, 2)
    assert breaker.current_state == "closed"
    fail_times(breaker, 1)
    assert breaker.current_state == "open"

    calls: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: calls.append(1))
    assert calls == []
    assert breakers.moves(tenant) == [("closed", "open")]


@pytest.mark.parametrize(
    "error",
    [VendorRateLimitError, VendorClientError, VendorAuthError, BulkheadFullError],
    ids=["429", "4xx", "401", "bulkhead-full"],
)
def test_rate_limits_client_errors_and_full_bulkheads_never_open_it(
    breakers: Breakers, tenant: int, error: type[Exception]
) -> None:
    breaker = breakers(tenant)
    fail_times(breaker, 10, error)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


def test_neutral_errors_neither_count_nor_end_a_streak(breakers: Breakers, tenant: int) -> None:
    breaker = breakers(tenant)
    for error in (VendorServerError, VendorRateLimitError, VendorServerError, VendorClientError):
        fail_times(breaker, 1, error)
    assert breaker.fail_counter == 2
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.fail_counter == 0, "a success ends the streak"


def test_exempt_vendors_never_open_even_if_already_open(kind: str, tenant: int) -> None:
    Breakers(kind)(tenant, "zerobounce").open()  # opened before it was made exempt
    exempt = Breakers(kind, cb_global_exempt_vendors="zerobounce,crm")(tenant, "zerobounce")
    fail_times(exempt, 20)
    assert exempt.call(lambda: "served") == "served"


def test_a_per_vendor_override_changes_the_threshold(kind: str, tenant: int) -> None:
    breakers = Breakers(kind, cb_vendor_overrides={"crm": {"error_threshold": 5}})
    fail_times(breakers(tenant, "crm"), 4)
    fail_times(breakers(tenant, "crawler"), 3)
    assert breakers(tenant, "crawler").current_state == "open"
    assert breakers(tenant, "crm").current_state == "closed"


def test_one_tenants_failures_never_open_another_tenants_breaker(
    breakers: Breakers, tenant: int
) -> None:
    fail_times(breakers(tenant, "apify_linkedin"), 3)
    assert breakers(tenant, "apify_linkedin").current_state == "open"
    neighbour = breakers(tenant + 1, "apify_linkedin")
    assert neighbour.current_state == "closed"
    assert neighbour.call(lambda: "served") == "served"


def test_cool_off_follows_the_injected_clock(breakers: Breakers, tenant: int) -> None:
    breaker = breakers(tenant)
    breaker.open()
    breakers.clock.advance(get_settings().cb_cool_off_s - 0.5)
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.call(lambda: "early")
    assert rejected.value.details["retry_in_s"] == pytest.approx(0.5)

    breakers.clock.advance(0.5)
    assert breaker.call(lambda: "probe") == "probe"
    assert breakers.moves(tenant) == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_failed_probe_reopens_and_closing_needs_the_success_threshold(
    kind: str, tenant: int
) -> None:
    breakers = Breakers(kind, cb_success_threshold=2)
    breaker, cool_off = breakers(tenant), get_settings().cb_cool_off_s
    breaker.open()
    breakers.clock.advance(cool_off)
    fail_times(breaker, 1)
    assert breaker.current_state == "open"
    breakers.clock.advance(cool_off - 1)
    with pytest.raises(CircuitOpenError):  # re-opened by the probe: a fresh cool-off
        breaker.call(lambda: None)

    breakers.clock.advance(1)
    breaker.call(lambda: None)
    assert (breaker.current_state, breaker.success_counter) == ("half-open", 1)
    breaker.call(lambda: None)
    assert breaker.current_state == "closed"


@pytest.mark.parametrize("max_calls", [1, 3])
def test_half_open_admits_only_the_allowed_probes_at_once(
    kind: str, tenant: int, max_calls: int
) -> None:
    breakers = Breakers(kind, cb_half_open_max_calls=max_calls)
    breaker = breakers(tenant)
    breaker.open()
    breakers.clock.advance(get_settings().cb_cool_off_s)
    with ExitStack() as probes:  # probes stay in flight until the stack unwinds
        for _ in range(max_calls):
            probes.enter_context(breaker.calling())
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "one too many")
    assert breaker.current_state == "closed"


def test_a_rate_limited_probe_frees_its_slot(breakers: Breakers, tenant: int) -> None:
    breaker = breakers(tenant)
    breaker.open()
    breakers.clock.advance(get_settings().cb_cool_off_s)
    fail_times(breaker, 1, VendorRateLimitError)
    assert breaker.current_state == "half-open"
    assert breaker.call(lambda: "next probe") == "next probe"


def test_calling_counts_what_happens_inside_the_block(breakers: Breakers, tenant: int) -> None:
    breaker = breakers(tenant)
    for _ in range(3):
        with pytest.raises(VendorServerError), breaker.calling():
            raise VendorServerError("inside", vendor="crm")
    assert breaker.current_state == "open"


def test_an_outcome_from_before_a_transition_changes_nothing(
    breakers: Breakers, tenant: int
) -> None:
    breaker = breakers(tenant)
    with pytest.raises(VendorServerError), breaker.calling():  # admitted while closed ...
        breaker.open()  # ... the breaker moves on meanwhile ...
        breakers.clock.advance(get_settings().cb_cool_off_s)
        assert breaker.call(lambda: "probe") == "probe"  # ... and recovers
        raise VendorServerError("late failure", vendor="crm")
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


@pytest.fixture
def counting_redis() -> Iterator[type]:
    class CountingConnection(redis.Connection):
        sent = 0

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            CountingConnection.sent += 1
            super().send_packed_command(command, check_health)

    yield CountingConnection


def test_a_healthy_success_costs_one_round_trip_and_building_none(
    counting_redis: Any, tenant: int
) -> None:
    settings = get_settings()
    pool = redis.ConnectionPool.from_url(settings.redis_url, connection_class=counting_redis)
    factory = BreakerFactory(redis.Redis(connection_pool=pool), settings, sinks=())
    breakers = [factory(tenant + n, "crm") for n in range(10)]
    assert counting_redis.sent == 0, "building a breaker touches no storage"

    for breaker in breakers:
        breaker.call(lambda: None)
    counting_redis.sent = 0
    for breaker in breakers * 10:
        breaker.call(lambda: None)
    assert counting_redis.sent == 100

    fail_times(breakers[0], 1)
    counting_redis.sent = 0
    breakers[0].call(lambda: None)
    assert counting_redis.sent == 2, "ending a failure streak costs one more write"
