"""The token store's pure logic: jittered cache lifetime, the bounded wait for a peer's
refresh (injected clock and sleep, scripted Redis answers), the 401 → refresh → retry-once
rule and masked reprs. Redis itself is exercised in tests/integration/test_crm_tokens.py."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.credentials import Credential
from pipeline.crm_tokens import SCRIPTS, AuthRequiredError, CrmTokens, TokenGrant, cache_ttl_s
from pipeline.errors import TokenLockBusyError, VendorAuthError, VendorError, VendorTimeoutError

TENANT = 7


class ScriptedRedis:
    """Answers each registered script from a list of canned replies; records calls."""

    def __init__(self, replies: dict[str, list[Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, list[str], list[Any]]] = []
        self._names = {text: name for name, text in SCRIPTS.items()}

    def register_script(self, text: str) -> Callable[..., Any]:
        name = self._names[text]

        def run(keys: list[str], args: list[Any]) -> Any:
            self.calls.append((name, keys, args))
            queue = self.replies.get(name, [])
            return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else 1)

        return run

    def set(self, *args: Any) -> None:
        self.calls.append(("set", list(args), []))


class Endpoint:
    def __init__(self, *answers: TokenGrant | VendorError) -> None:
        self.answers = list(answers)
        self.secrets: list[str] = []

    def request_token(self, tenant_id: int, secret: Mapping[str, str]) -> TokenGrant:
        self.secrets.append(secret["client_secret"])
        answer = self.answers.pop(0)
        if isinstance(answer, VendorError):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def credential(secret: str = "s3cret", status: str = "active") -> Credential:
    return Credential(
        id=1,
        tenant_id=TENANT,
        vendor="crm",
        secret={"client_id": "c", "client_secret": secret},
        status=status,
        attention_reason=None,
        attention_at=None,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def store(
    redis: ScriptedRedis,
    endpoint: Endpoint,
    clock: Clock,
    *,
    read: Callable[[int], Credential] = lambda t: credential(),
    marked: list[str] | None = None,
) -> CrmTokens:
    return CrmTokens(
        redis,  # type: ignore[arg-type]
        endpoint,
        prefix="p",
        refresh_margin_s=60,
        jitter_s=30,
        lock_ttl_s=8,
        lock_wait_s=1.0,
        poll_s=0.1,
        rng=random.Random(3),
        clock=clock,
        sleep=clock.sleep,
        read_credential=read,
        mark_attention=lambda _credential, reason: (marked if marked is not None else []).append(
            reason
        ),
    )


def refused() -> VendorAuthError:
    return VendorAuthError(
        "crm answered 401",
        vendor="crm",
        status_code=401,
        details={"vendor_error": "invalid_client"},
    )


# -- expiry ----------------------------------------------------------------------------------


def test_cache_lifetime_is_expiry_less_margin_less_a_jitter_drawn_from_the_rng() -> None:
    draw = random.Random(42).uniform(0, 30)
    ttl = cache_ttl_s(3600, margin_s=60, jitter_s=30, rng=random.Random(42))
    assert ttl == pytest.approx(3600 - 60 - draw)
    assert 3510 <= ttl <= 3540


def test_tenants_drawing_from_one_rng_get_different_lifetimes() -> None:
    rng = random.Random(1)
    lifetimes = {cache_ttl_s(3600, margin_s=60, jitter_s=30, rng=rng) for _ in range(20)}
    assert len(lifetimes) == 20


def test_a_short_lived_token_is_cached_for_half_its_life_and_a_dead_one_not_at_all() -> None:
    assert cache_ttl_s(10, margin_s=60, jitter_s=30, rng=random.Random(0)) == 5
    assert cache_ttl_s(0, margin_s=60, jitter_s=30, rng=random.Random(0)) == 0


# -- single flight ---------------------------------------------------------------------------


def test_the_lock_holder_fetches_caches_with_jittered_ttl_and_releases() -> None:
    redis, endpoint, clock = ScriptedRedis({"fetch_or_lock": [[2]]}), Endpoint(), Clock()
    endpoint.answers.append(TokenGrant("tok-1", 3600))
    assert store(redis, endpoint, clock).token(TENANT) == "tok-1"

    name, keys, args = redis.calls[-1]
    expected_ms = int(cache_ttl_s(3600, margin_s=60, jitter_s=30, rng=random.Random(3)) * 1000)
    assert name == "store" and args[1:] == ["tok-1", expected_ms]
    assert keys == ["p:tok:{7:crm}", "p:tok:{7:crm}:lock"]


def test_a_waiting_worker_polls_until_the_holder_caches_the_token() -> None:
    redis = ScriptedRedis({"fetch_or_lock": [[0], [0], [1, b"tok-peer"]]})
    clock, endpoint = Clock(), Endpoint()
    assert store(redis, endpoint, clock).token(TENANT) == "tok-peer"
    assert clock.sleeps == [0.1, 0.1]
    assert endpoint.secrets == [], "the waiter never asks the endpoint"


def test_the_wait_is_bounded_and_ends_in_a_retryable_error_no_breaker_counts() -> None:
    redis, clock, endpoint = ScriptedRedis({"fetch_or_lock": [[0]]}), Clock(), Endpoint()
    with pytest.raises(TokenLockBusyError) as raised:
        store(redis, endpoint, clock).token(TENANT)
    assert raised.value.retryable and not raised.value.counts_as_failure
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert endpoint.secrets == []


def test_a_failed_fetch_releases_the_lock_it_holds() -> None:
    redis, clock = ScriptedRedis({"fetch_or_lock": [[2]]}), Clock()
    endpoint = Endpoint(VendorTimeoutError("slow", vendor="crm"))
    with pytest.raises(VendorTimeoutError):
        store(redis, endpoint, clock).token(TENANT)
    name, keys, _ = redis.calls[-1]
    assert name == "compare_and_delete" and keys == ["p:tok:{7:crm}:lock"]


# -- refusals --------------------------------------------------------------------------------


def test_a_401_invalidates_that_token_and_retries_once_with_a_fresh_one() -> None:
    redis = ScriptedRedis({"fetch_or_lock": [[1, b"old"], [1, b"new"]]})
    tokens, used = store(redis, Endpoint(), Clock()), []

    def use(token: str) -> str:
        used.append(token)
        if token == "old":
            raise VendorAuthError("401", vendor="crm", status_code=401)
        return "done"

    assert tokens.call(TENANT, use) == "done"
    assert used == ["old", "new"]
    assert ("compare_and_delete", ["p:tok:{7:crm}"], ["old"]) in redis.calls


def test_a_403_is_not_healed_by_a_new_token() -> None:
    redis = ScriptedRedis({"fetch_or_lock": [[1, b"tok"]]})

    def forbidden(token: str) -> None:
        raise VendorAuthError("403", vendor="crm", status_code=403)

    with pytest.raises(VendorAuthError):
        store(redis, Endpoint(), Clock()).call(TENANT, forbidden)
    assert not any(name == "compare_and_delete" for name, _, _ in redis.calls)


def test_refused_credentials_are_reread_then_marked_and_auth_required_is_raised() -> None:
    redis, marked = ScriptedRedis({"fetch_or_lock": [[2]]}), list[str]()
    endpoint = Endpoint(refused(), refused())
    reads = iter([credential("old"), credential("rotated")])
    tokens = store(redis, endpoint, Clock(), read=lambda t: next(reads), marked=marked)

    with pytest.raises(AuthRequiredError) as raised:
        tokens.token(TENANT)
    assert endpoint.secrets == ["old", "rotated"]
    assert raised.value.code == "AUTH_REQUIRED" and not raised.value.retryable
    assert marked and "invalid_client" in marked[0]
    assert ("set", ["p:tok:{7:crm}:attention", "1:2026-01-01T00:00:00+00:00"], []) in redis.calls


def test_while_flagged_a_credential_needing_attention_makes_no_request() -> None:
    redis = ScriptedRedis({"fetch_or_lock": [[3, b"1:x"]]})
    endpoint = Endpoint()
    tokens = store(redis, endpoint, Clock(), read=lambda t: credential(status="needs_attention"))
    with pytest.raises(AuthRequiredError):
        tokens.token(TENANT)
    assert endpoint.secrets == []


def test_reprs_mask_tokens_and_the_error_names_no_secret() -> None:
    assert "tok-xyz" not in repr(TokenGrant("tok-xyz", 60))
    assert "tok-xyz" not in str(TokenGrant("tok-xyz", 60))
    redis, endpoint = ScriptedRedis({"fetch_or_lock": [[2]]}), Endpoint(refused(), refused())
    with pytest.raises(AuthRequiredError) as raised:
        store(redis, endpoint, Clock(), read=lambda t: credential("hush-123")).token(TENANT)
    assert "hush-123" not in f"{raised.value} {raised.value.details!r}"
