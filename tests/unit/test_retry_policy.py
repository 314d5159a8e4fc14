from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pipeline.errors import (
    CircuitOpenError,
    RetriesExhaustedError,
    VendorAuthError,
    VendorClientError,
    VendorConnectionError,
    VendorRateLimitError,
    VendorServerError,
    VendorTimeoutError,
)
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import load_settings


class UpperBoundRandom(random.Random):
    """Always picks the top of the jitter range."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowerBoundRandom(random.Random):
    """Always picks the bottom of the jitter range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def make_policy(
    *,
    max_attempts: int = 3,
    retry_after_cap_s: float = 120.0,
    seed: int | None = None,
    rng: random.Random | None = None,
) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        base_delay_ms=250,
        max_delay_ms=4000,
        retry_after_cap_s=retry_after_cap_s,
        seed=seed,
        rng=rng,
    )


def server_error() -> VendorServerError:
    return VendorServerError("crm answered 503", vendor="crm", status_code=503)


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def failing_then(
    errors: list[Exception], result: str = "ok"
) -> tuple[Callable[[], str], list[int]]:
    """A function that raises each of `errors` in turn, then returns `result`."""
    calls: list[int] = []
    pending = list(errors)

    def fn() -> str:
        calls.append(1)
        if pending:
            raise pending.pop(0)
        return result

    return fn, calls


# --- backoff shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0), (6, 4.0), (10, 4.0)],
)
def test_delay_upper_bound_doubles_from_base_and_caps_at_max(attempt: int, expected: float) -> None:
    policy = make_policy(max_attempts=20, rng=UpperBoundRandom())
    assert policy.delay_for(attempt, server_error()) == expected
    assert policy.backoff_cap_s(attempt) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_delay_lower_bound_is_zero_full_jitter(attempt: int) -> None:
    policy = make_policy(max_attempts=20, rng=LowerBoundRandom())
    assert policy.delay_for(attempt, server_error()) == 0.0


def test_delay_is_drawn_from_zero_to_cap() -> None:
    seen: list[tuple[float, float]] = []

    class Recording(random.Random):
        def uniform(self, a: float, b: float) -> float:
            seen.append((a, b))
            return (a + b) / 2

    policy = make_policy(max_attempts=20, rng=Recording())
    assert policy.delay_for(3, server_error()) == 0.5
    assert seen == [(0.0, 1.0)]


def test_unseeded_delays_stay_within_bounds() -> None:
    policy = make_policy(max_attempts=20, rng=random.Random(1234))
    for attempt in range(1, 10):
        for _ in range(50):
            delay = policy.delay_for(attempt, server_error())
            assert delay is not None
            assert 0.0 <= delay <= policy.backoff_cap_s(attempt)


# --- seeded jitter ----------------------------------------------------------------------


def test_seeded_delay_is_identical_across_policy_objects() -> None:
    first = make_policy(max_attempts=10, seed=42)
    second = make_policy(max_attempts=10, seed=42)
    for attempt in range(1, 6):
        a = first.delay_for(attempt, server_error(), key="task-1")
        b = second.delay_for(attempt, server_error(), key="task-1")
        assert a == b
        # and repeatable on the same object
        assert first.delay_for(attempt, server_error(), key="task-1") == a


def test_seeded_delay_differs_across_keys() -> None:
    policy = make_policy(max_attempts=10, seed=42)
    for attempt in (3, 5):
        delays = {policy.delay_for(attempt, server_error(), key=f"task-{i}") for i in range(10)}
        assert len(delays) > 1


def test_seeded_delay_differs_across_seeds() -> None:
    delays = {
        make_policy(max_attempts=10, seed=seed).delay_for(5, server_error(), key="task-1")
        for seed in range(10)
    }
    assert len(delays) > 1


def test_seed_takes_precedence_over_injected_rng() -> None:
    seeded = make_policy(seed=7, rng=UpperBoundRandom())
    plain = make_policy(seed=7)
    assert seeded.delay_for(2, server_error(), key="k") == plain.delay_for(
        2, server_error(), key="k"
    )


# --- which errors are retried -----------------------------------------------------------


def test_rate_limit_waits_at_least_retry_after() -> None:
    policy = make_policy(rng=LowerBoundRandom())
    error = VendorRateLimitError("429", vendor="crm", status_code=429, retry_after_s=3.0)
    assert policy.delay_for(1, error) == 3.0


def test_rate_limit_keeps_jitter_when_larger_than_retry_after() -> None:
    policy = make_policy(max_attempts=20, rng=UpperBoundRandom())
    error = VendorRateLimitError("429", retry_after_s=0.1)
    assert policy.delay_for(5, error) == 4.0


def test_rate_limit_without_retry_after_waits_as_if_it_said_one_second() -> None:
    assert make_policy(rng=LowerBoundRandom()).delay_for(2, VendorRateLimitError("429")) == 1.0
    assert make_policy(rng=UpperBoundRandom()).delay_for(2, VendorRateLimitError("429")) == 1.5


# --- Retry-After jitter -----------------------------------------------------------------


def rate_limited(retry_after_s: float) -> VendorRateLimitError:
    return VendorRateLimitError("429", vendor="crm", status_code=429, retry_after_s=retry_after_s)


def test_retry_after_jitter_is_a_fraction_of_the_wait_at_most_the_jitter_cap() -> None:
    policy = make_policy(rng=UpperBoundRandom())  # defaults: fraction 0.5, at most 10 s
    assert policy.delay_for(1, rate_limited(2.0)) == 3.0
    assert policy.retry_after_wait(2.0) == 3.0
    assert policy.delay_for(1, rate_limited(60.0)) == 70.0, "jitter capped at 10 s"
    assert policy.retry_after_jitter_max(2.0) == 1.0
    assert policy.retry_after_jitter_max(60.0) == 10.0


def test_seeded_retry_after_waits_spread_never_below_retry_after_nor_above_the_cap() -> None:
    policy = make_policy(max_attempts=5, seed=20261123)
    for retry_after in (0.5, 2.0, 30.0, 120.0):
        ceiling = retry_after + policy.retry_after_jitter_max(retry_after)
        waits = [
            policy.delay_for(1, rate_limited(retry_after), key=f"task-{i}") for i in range(200)
        ]
        assert all(w is not None and retry_after <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100, "spread, not one instant for everyone"
        spread = max(w for w in waits if w) - min(w for w in waits if w)
        assert spread > 0.8 * policy.retry_after_jitter_max(retry_after)
        again = [
            policy.delay_for(1, rate_limited(retry_after), key=f"task-{i}") for i in range(200)
        ]
        assert again == waits, "seeded: the same per key and attempt"


def test_retry_after_wait_draws_from_the_injected_rng() -> None:
    waits = {make_policy(rng=random.Random(s)).retry_after_wait(2.0) for s in range(50)}
    assert len(waits) > 40 and all(2.0 <= w <= 3.0 for w in waits)
    seeded = make_policy(seed=3)
    assert seeded.retry_after_wait(2.0, key="k") == seeded.retry_after_wait(2.0, key="k")


def test_a_retry_after_above_the_cap_waits_the_cap_when_asked_for_a_wait() -> None:
    policy = make_policy(retry_after_cap_s=120.0, rng=UpperBoundRandom())
    assert policy.retry_after_wait(500.0) == 130.0
    assert policy.delay_for(1, rate_limited(500.0)) is None, "the task still does not retry it"


def test_settings_bound_the_longest_jittered_wait(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(cb_cool_off_s=5.0)
    policy = RetryPolicy.from_settings(settings, rng=UpperBoundRandom())
    longest = policy.retry_after_wait(settings.retry_after_cap_s)
    assert longest == settings.retry_after_cap_s + settings.retry_after_jitter_max_s
    assert settings.max_retry_countdown_s >= longest


def test_retry_after_above_cap_is_not_retried() -> None:
    policy = make_policy(retry_after_cap_s=120.0, rng=UpperBoundRandom())
    error = VendorRateLimitError("429", retry_after_s=121.0)
    assert policy.delay_for(1, error) is None
    assert policy.will_retry(1, error) is False


def test_retry_after_equal_to_cap_is_retried() -> None:
    policy = make_policy(retry_after_cap_s=120.0, rng=LowerBoundRandom())
    error = VendorRateLimitError("429", retry_after_s=120.0)
    assert policy.delay_for(1, error) == 120.0


@pytest.mark.parametrize(
    "error",
    [
        VendorServerError("503", status_code=503),
        VendorTimeoutError("timed out"),
        VendorConnectionError("unreachable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_server_errors_and_timeouts_are_retried(error: Exception) -> None:
    policy = make_policy(rng=UpperBoundRandom())
    assert policy.will_retry(1, error) is True
    assert policy.delay_for(1, error) == 0.25


@pytest.mark.parametrize(
    "error",
    [
        VendorClientError("422", status_code=422),
        VendorAuthError("401", status_code=401),
        CircuitOpenError("open"),
        ValueError("not a vendor error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_final_errors_are_not_retried(error: Exception) -> None:
    policy = make_policy(rng=UpperBoundRandom())
    assert policy.will_retry(1, error) is False
    assert policy.delay_for(1, error) is None


@pytest.mark.parametrize("attempt", [3, 4, 10])
def test_no_retry_once_max_attempts_reached(attempt: int) -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    assert policy.delay_for(attempt, server_error()) is None
    assert policy.delay_for(2, server_error()) == 0.5


def test_single_attempt_policy_never_retries() -> None:
    policy = make_policy(max_attempts=1, rng=UpperBoundRandom())
    assert policy.delay_for(1, server_error()) is None


# --- in-process retrying ----------------------------------------------------------------


def test_retrying_sleeps_the_policy_delays_seeded() -> None:
    policy = make_policy(max_attempts=3, seed=99)
    fn, calls = failing_then([server_error(), server_error()])
    sleeps: list[float] = []
    result = policy.retrying(sleep=sleeps.append, key="task-7")(fn)
    assert result == "ok"
    assert len(calls) == 3
    expected = [
        policy.delay_for(1, server_error(), key="task-7"),
        policy.delay_for(2, server_error(), key="task-7"),
    ]
    assert sleeps == expected


def test_retrying_sleeps_the_policy_delays_with_stub_rng() -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    fn, calls = failing_then([server_error(), server_error()])
    sleeps: list[float] = []
    assert policy.retrying(sleep=sleeps.append)(fn) == "ok"
    assert sleeps == [0.25, 0.5]
    assert len(calls) == 3


def test_retrying_honours_retry_after() -> None:
    policy = make_policy(max_attempts=3, rng=LowerBoundRandom())
    fn, _ = failing_then([VendorRateLimitError("429", retry_after_s=3.0)])
    sleeps: list[float] = []
    assert policy.retrying(sleep=sleeps.append)(fn) == "ok"
    assert sleeps == [3.0]


def test_retrying_reraises_last_error_when_exhausted() -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    last = server_error()
    fn, calls = failing_then([server_error(), server_error(), last])
    sleeps: list[float] = []
    with pytest.raises(VendorServerError) as info:
        policy.retrying(sleep=sleeps.append)(fn)
    assert info.value is last
    assert len(calls) == 3
    assert sleeps == [0.25, 0.5]


def test_retrying_does_not_sleep_on_first_success() -> None:
    policy = make_policy(rng=UpperBoundRandom())
    fn, calls = failing_then([])
    assert policy.retrying(sleep=no_sleep)(fn) == "ok"
    assert len(calls) == 1


# --- call --------------------------------------------------------------------------------


def test_call_returns_result_after_transient_failures() -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    fn, calls = failing_then([VendorTimeoutError("t"), server_error()], result="done")
    sleeps: list[float] = []
    assert policy.call(fn, sleep=sleeps.append) == "done"
    assert len(calls) == 3
    assert sleeps == [0.25, 0.5]


def test_call_passes_arguments_through() -> None:
    policy = make_policy(rng=UpperBoundRandom())
    assert policy.call(lambda a, b=0: a + b, 2, b=3, sleep=no_sleep) == 5


def test_call_raises_retries_exhausted_when_every_attempt_fails() -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    calls: list[int] = []

    def always_503() -> None:
        calls.append(1)
        raise server_error()

    sleeps: list[float] = []
    with pytest.raises(RetriesExhaustedError) as info:
        policy.call(always_503, sleep=sleeps.append)
    error = info.value
    assert error.last_error.code == "SERVER_ERROR"
    assert isinstance(error.last_error, VendorServerError)
    assert error.attempts == policy.max_attempts == 3
    assert len(calls) == 3
    assert error.vendor == "crm"
    assert error.status_code == 503
    assert error.__cause__ is error.last_error
    assert sleeps == [0.25, 0.5]


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_call_attempts_equal_max_attempts(max_attempts: int) -> None:
    policy = make_policy(max_attempts=max_attempts, rng=LowerBoundRandom())
    calls: list[int] = []

    def always_timeout() -> None:
        calls.append(1)
        raise VendorTimeoutError("t", vendor="crm")

    with pytest.raises(RetriesExhaustedError) as info:
        policy.call(always_timeout, sleep=lambda _s: None)
    assert info.value.attempts == max_attempts
    assert info.value.last_error.code == "TIMEOUT"
    assert len(calls) == max_attempts


@pytest.mark.parametrize(
    "error",
    [
        VendorClientError("422", vendor="crm", status_code=422),
        VendorAuthError("401", vendor="crm", status_code=401),
        CircuitOpenError("open", vendor="crm"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_call_propagates_final_error_unchanged_after_one_call(error: Exception) -> None:
    policy = make_policy(max_attempts=3, rng=UpperBoundRandom())
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)) as info:
        policy.call(fail, sleep=no_sleep)
    assert info.value is error
    assert len(calls) == 1


def test_call_propagates_non_vendor_exception_unchanged() -> None:
    policy = make_policy(rng=UpperBoundRandom())
    boom = KeyError("bug")
    fn, calls = failing_then([boom])
    with pytest.raises(KeyError) as info:
        policy.call(fn, sleep=no_sleep)
    assert info.value is boom
    assert len(calls) == 1


# --- from_settings ----------------------------------------------------------------------


def test_from_settings_uses_spec_defaults(clean_env: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy.from_settings(load_settings(), rng=UpperBoundRandom())
    assert policy.max_attempts == 3
    assert policy.base_delay_s == 0.25
    assert policy.max_delay_s == 4.0
    assert policy.retry_after_cap_s == 120.0
    assert policy.seed is None
    assert policy.delay_for(1, server_error()) == 0.25


def test_from_settings_reads_jitter_seed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RETRY_JITTER_SEED", "5")
    policy = RetryPolicy.from_settings(load_settings())
    assert policy.seed == 5
    assert policy.delay_for(2, server_error(), key="k") == make_policy(seed=5).delay_for(
        2, server_error(), key="k"
    )


# -- our own database going away, and pauses ---------------------------------------------------


def outage_policy(rng: random.Random | None = None, seed: int | None = None) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=3,
        base_delay_ms=250,
        max_delay_ms=4000,
        retry_after_cap_s=120.0,
        outage_base_delay_ms=1000,
        outage_max_delay_ms=30000,
        outage_max_s=600.0,
        paused_max_s=3600.0,
        rng=rng,
        seed=seed,
    )


def test_outage_waits_double_up_to_the_cap_and_are_never_near_zero() -> None:
    low, high = outage_policy(LowerBoundRandom()), outage_policy(UpperBoundRandom())
    assert [low.outage_delay(n, 0.0) for n in (1, 2, 3, 6, 12)] == [0.5, 1.0, 2.0, 15.0, 15.0]
    assert [high.outage_delay(n, 0.0) for n in (1, 2, 3, 6, 12)] == [1.0, 2.0, 4.0, 30.0, 30.0]


def test_outage_retries_span_the_whole_budget_then_stop() -> None:
    """Even at the bottom of every jitter range, a task keeps trying for DB_OUTAGE_MAX_S."""
    policy = outage_policy(LowerBoundRandom())
    elapsed, attempt = 0.0, 1
    while (delay := policy.outage_delay(attempt, elapsed)) is not None:
        elapsed, attempt = elapsed + delay, attempt + 1
    assert 600.0 <= elapsed < 600.0 + 30.0
    assert policy.outage_delay(1, 600.0) is None


def test_outage_jitter_is_reproducible_per_task_when_seeded() -> None:
    one, two = outage_policy(seed=5), outage_policy(seed=5)
    assert one.outage_delay(3, 10.0, key="t1") == two.outage_delay(3, 10.0, key="t1")
    spread = {one.outage_delay(3, 10.0, key=f"t{i}") for i in range(20)}
    assert len(spread) > 10 and all(2.0 <= d <= 4.0 for d in spread if d is not None)


def test_a_pause_waits_what_was_asked_plus_a_little_jitter_until_its_limit() -> None:
    policy = outage_policy(seed=9)
    waits = [policy.pause_delay(2.0, 0.0, key=f"t{i}") for i in range(50)]
    assert all(w is not None and 2.0 <= w <= 3.0 for w in waits), "up to half as much again"
    assert len(set(waits)) > 25, "callers told the same Retry-After come back spread out"
    assert policy.pause_delay(2.0, 3600.0) is None
