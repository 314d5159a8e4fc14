"""`list_breakers` reads every breaker stored in Redis, and nothing else, without writing."""

from __future__ import annotations

import time

import pytest

from pipeline.breakers import breaker_for
from pipeline.breakers.listing import list_breakers
from pipeline.breakers.storage import RedisBreakerStorage
from pipeline.errors import VendorServerError
from pipeline.redis_client import redis_for
from pipeline.settings import get_settings

pytestmark = pytest.mark.usefixtures("integration_env")


def fail() -> None:
    raise VendorServerError("503", vendor="lusha")


def test_lists_state_failures_and_opening_time_per_tenant_and_vendor(tenant: int) -> None:
    settings = get_settings()
    client = redis_for(settings.redis_url)
    breaker_for(tenant, "crm").open()
    with pytest.raises(VendorServerError):
        breaker_for(tenant, "lusha").call(fail)
    breaker_for(tenant, "crawler").call(lambda: None)  # never failed: nothing stored
    breaker_for(tenant + 1, "crm").open()

    mine = {b.vendor: b for b in list_breakers(client, settings.redis_key_prefix, tenant_id=tenant)}

    assert set(mine) == {"crm", "lusha"}
    assert (mine["crm"].state, mine["crm"].tenant_id) == ("open", tenant)
    assert mine["crm"].opened_at is not None
    assert abs(mine["crm"].opened_at.timestamp() - time.time()) < 60
    assert (mine["lusha"].state, mine["lusha"].failures, mine["lusha"].opened_at) == (
        "closed",
        1,
        None,
    )
    everyone = {(b.tenant_id, b.vendor) for b in list_breakers(client, settings.redis_key_prefix)}
    assert {(tenant, "crm"), (tenant, "lusha"), (tenant + 1, "crm")} <= everyone
    assert breaker_for(tenant, "crm").current_state == "open", "reading changed nothing"


def test_a_prefix_with_glob_characters_matches_only_itself(tenant: int) -> None:
    settings = get_settings()
    client = redis_for(settings.redis_url)
    odd, lookalike = f"{settings.redis_key_prefix}-a*[b]", f"{settings.redis_key_prefix}-aXb"
    for prefix in (odd, lookalike):
        storage = RedisBreakerStorage(client, prefix=prefix, tenant_id=tenant, vendor="crm")
        storage.force("open", time.time())
    client.zadd(f"{odd}:cb:{{{tenant}:crm}}:probes", {"lease": 1})

    listed = list(list_breakers(client, odd, batch=1))

    assert [(b.tenant_id, b.vendor, b.state) for b in listed] == [(tenant, "crm", "open")]
