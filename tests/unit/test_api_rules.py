"""The API's pure rules: who sees which tenant, which correlation ids are carried, when a
vendor counts as unhealthy."""

from __future__ import annotations

import pytest

from pipeline.api.auth import Caller
from pipeline.breakers.inspection import VendorBreakers
from pipeline.correlation import carriable, correlation_scope, current_correlation_id
from pipeline.errors import NotFoundError


def test_a_tenant_key_acts_on_its_own_tenant_and_finds_no_other() -> None:
    caller = Caller(key_id=1, tenant_id=7)
    assert caller.tenant_scope(None) == caller.tenant_scope(7) == 7
    assert caller.sees(7) and not caller.sees(8)
    with pytest.raises(NotFoundError, match="no such tenant"):
        caller.tenant_scope(8)


def test_an_admin_key_acts_on_the_tenant_asked_for_or_all() -> None:
    admin = Caller(key_id=1, tenant_id=None)
    assert admin.is_admin and admin.sees(8)
    assert (admin.tenant_scope(8), admin.tenant_scope(None)) == (8, None)


@pytest.mark.parametrize("value", ["abc-123", "req:4711/a.b@c+d=e_f", "x" * 64])
def test_ids_fit_to_carry_are_kept(value: str) -> None:
    assert carriable(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 65, "two words", 'a"b', "line\nbreak", "é"])
def test_other_ids_are_dropped(value: str | None) -> None:
    assert carriable(value) is None


def test_a_correlation_scope_binds_for_its_block_only() -> None:
    with correlation_scope("outer"):
        with correlation_scope(None) as made:
            assert current_correlation_id() == made != "outer"
        assert current_correlation_id() == "outer"
    assert current_correlation_id() is None


@pytest.mark.parametrize(
    ("breakers", "open_", "half_open", "healthy"),
    [(0, 0, 0, True), (10, 4, 0, True), (10, 4, 1, False), (1, 1, 0, False), (2, 0, 1, False)],
)
def test_a_vendor_is_unhealthy_once_half_its_breakers_are_open(
    breakers: int, open_: int, half_open: int, healthy: bool
) -> None:
    counts = VendorBreakers(breakers=breakers, open=open_, half_open=half_open)
    assert counts.healthy(0.5) is healthy
