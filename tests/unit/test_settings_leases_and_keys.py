"""LEASE_TTL_S and API_KEY_CACHE_S: defaults, and the checks that stop a bad value at start-up."""

from __future__ import annotations

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_a_lease_lives_fifteen_seconds_and_a_key_is_trusted_a_minute() -> None:
    settings = load_settings()
    assert settings.lease_ttl_s == 15.0
    assert settings.api_key_cache_s == 60.0


def test_the_lease_ttl_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASE_TTL_S", "0")
    with pytest.raises(SettingsError, match=r"LEASE_TTL_S: .*greater than 0"):
        load_settings()


def test_the_lease_ttl_must_leave_room_for_two_slow_renewals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEASE_TTL_S", "1.5")  # renewed every 0.5 s; a renewal may take 0.5 s
    with pytest.raises(SettingsError, match=r"LEASE_TTL_S=1.5 must exceed 3 x REDIS_SOCKET"):
        load_settings()
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_S", "0.2")
    assert load_settings().lease_ttl_s == 1.5


def test_the_key_cache_may_be_off_but_not_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY_CACHE_S", "0")
    assert load_settings().api_key_cache_s == 0
    monkeypatch.setenv("API_KEY_CACHE_S", "-1")
    with pytest.raises(SettingsError, match="API_KEY_CACHE_S"):
        load_settings()
