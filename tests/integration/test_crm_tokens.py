"""The CRM token lifecycle against real Redis, Postgres (the credential store) and the
simulator's CRM: caching with jittered expiry, 401 → refresh → retry, a refused refresh →
re-authentication with the stored credential, and `AUTH_REQUIRED` when that fails too."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import structlog
from cryptography.fernet import Fernet

from pipeline.credentials import get_credential, put_credential
from pipeline.crm_tokens import AuthRequiredError, CrmTokens, cache_ttl_s
from pipeline.settings import get_settings
from pipeline.simulator import Simulator
from pipeline.vendors.crm import CrmClient

SEED = 20261123


@pytest.fixture
def secret_key(integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("PIPELINE_SECRET_KEY", key)
    get_settings.cache_clear()
    yield key
    monkeypatch.undo()
    get_settings.cache_clear()


def new_crm(seed: int = SEED) -> CrmClient:
    """A client with its own token store (as a fresh worker process would have)."""
    crm = CrmClient(get_settings())
    crm._tokens = CrmTokens.from_settings(crm, get_settings(), rng=random.Random(seed))
    return crm


def enrol(sim: Simulator, tenant: int, secret: str, *, expires_in: int = 3600) -> None:
    """The tenant's OAuth client, known to the CRM and stored in the credential store."""
    sim.register_crm_client(tenant, f"client-{tenant}", secret, expires_in=expires_in)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": secret})


def token_requests(sim: Simulator, tenant: int) -> int:
    requests: dict[str, int] = sim.stats()["token_requests"]
    return requests.get(str(tenant), 0)


def upsert(crm: CrmClient, tenant: int, external_id: str) -> dict[str, Any]:
    record = {"external_id": external_id, "email": f"{external_id}@acme.com"}
    return crm.upsert_contact(tenant, record, idempotency_key=f"key-{external_id}")


def cached_token(tenant: int) -> bytes | None:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    value = client.get(new_crm().tokens.keys(tenant)[0])
    return value if isinstance(value, bytes) else None


def test_a_token_is_cached_until_margin_plus_jitter_before_expiry(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    enrol(simulator, tenant, "s3cret-cache", expires_in=3600)
    crm = new_crm(seed=SEED)
    settings = get_settings()

    first = crm.tokens.token(tenant)
    again = new_crm(seed=1).tokens.token(tenant)  # another process: reads the cache

    expected_s = cache_ttl_s(
        3600,
        margin_s=settings.crm_token_refresh_margin_s,
        jitter_s=settings.crm_token_jitter_s,
        rng=random.Random(SEED),
    )
    pttl = redis.Redis.from_url(settings.redis_url).pttl(crm.tokens.keys(tenant)[0])
    assert first == again
    assert token_requests(simulator, tenant) == 1
    assert 3600 - settings.crm_token_refresh_margin_s - settings.crm_token_jitter_s <= expected_s
    assert expected_s * 1000 - 2000 <= pttl <= expected_s * 1000


def test_a_401_on_upsert_refreshes_the_token_and_retries_once(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    enrol(simulator, tenant, "s3cret-refresh")
    crm = new_crm()
    assert upsert(crm, tenant, "ext-1")["created"] is True
    old = cached_token(tenant)

    simulator.revoke_crm_tokens(tenant)
    answer = upsert(crm, tenant, "ext-2")

    assert answer["created"] is True
    assert token_requests(simulator, tenant) == 2
    assert cached_token(tenant) not in (None, old), "the refused token was replaced"
    assert [c["external_id"] for c in simulator.crm_contacts(tenant)] == ["ext-1", "ext-2"]


def test_invalidate_drops_only_the_token_it_was_given(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    enrol(simulator, tenant, "s3cret-cas")
    tokens = new_crm().tokens
    current = tokens.token(tenant)

    assert tokens.invalidate(tenant, "some-older-token") is False
    assert cached_token(tenant) == current.encode()
    assert tokens.invalidate(tenant, current) is True
    assert cached_token(tenant) is None


def test_a_refused_refresh_reauthenticates_with_the_credential_updated_in_the_store(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    enrol(simulator, tenant, "s3cret-old")
    crm = new_crm()
    upsert(crm, tenant, "ext-1")

    # The operator rotates the secret at the CRM and in our store; old tokens die.
    enrol(simulator, tenant, "s3cret-new")
    simulator.revoke_crm_tokens(tenant)
    answer = upsert(crm, tenant, "ext-2")

    assert answer["created"] is True
    # 1 first token; 2 the refresh with the secret this worker last read (refused);
    # 3 the re-authentication with the credential re-read from the store.
    assert token_requests(simulator, tenant) == 3
    assert not get_credential(tenant, "crm").needs_attention


def test_a_failed_reauthentication_needs_attention_and_stops_token_requests(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    enrol(simulator, tenant, "s3cret-before")
    crm = new_crm()
    upsert(crm, tenant, "ext-1")
    simulator.register_crm_client(tenant, f"client-{tenant}", "changed-at-the-crm")
    simulator.revoke_crm_tokens(tenant)

    with pytest.raises(AuthRequiredError) as raised:
        upsert(crm, tenant, "ext-2")
    requests_when_marked = token_requests(simulator, tenant)
    credential = get_credential(tenant, "crm")

    assert raised.value.code == "AUTH_REQUIRED"
    assert requests_when_marked == 3  # first token, refresh, re-authentication
    assert credential.needs_attention
    assert credential.attention_at is not None
    assert "invalid_client" in (credential.attention_reason or "")

    for other_worker in (crm, new_crm()):
        with pytest.raises(AuthRequiredError):
            upsert(other_worker, tenant, "ext-3")
    assert token_requests(simulator, tenant) == requests_when_marked, "no request while marked"

    # Storing the credential anew re-activates it.
    put_credential(
        tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": "changed-at-the-crm"}
    )
    assert upsert(new_crm(), tenant, "ext-3")["created"] is True
    assert token_requests(simulator, tenant) == requests_when_marked + 1


def test_no_secret_or_token_reaches_logs_errors_or_reprs(
    secret_key: str, simulator: Simulator, tenant: int
) -> None:
    secret = f"never-show-{uuid.uuid4().hex}"
    enrol(simulator, tenant, secret)
    crm = new_crm()
    seen: list[str] = []
    with structlog.testing.capture_logs() as logs:
        upsert(crm, tenant, "ext-1")
        seen.append(crm.tokens.token(tenant))
        simulator.revoke_crm_tokens(tenant)
        upsert(crm, tenant, "ext-2")
        seen.append(crm.tokens.token(tenant))
        simulator.register_crm_client(tenant, f"client-{tenant}", "other")
        simulator.revoke_crm_tokens(tenant)
        with pytest.raises(AuthRequiredError) as raised:
            upsert(crm, tenant, "ext-3")

    assert logs, "the lifecycle is logged"
    shown = " ".join(
        [
            repr(logs),
            str(raised.value),
            repr(raised.value.details),
            repr(crm),
            repr(crm.tokens),
            repr(get_credential(tenant, "crm")),
        ]
    )
    for value in (secret, *seen):
        assert value not in shown
