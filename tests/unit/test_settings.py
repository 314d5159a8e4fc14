from __future__ import annotations

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import BreakerConfig, Settings, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


# --- defaults from the spec -------------------------------------------------------------


def test_retry_defaults_match_spec() -> None:
    settings = load_settings()
    assert settings.retry_max_attempts == 3
    assert settings.retry_base_delay_ms == 250
    assert settings.retry_max_delay_ms == 4000


def test_circuit_breaker_defaults_match_spec() -> None:
    settings = load_settings()
    assert settings.cb_error_threshold == 3
    assert settings.cb_cool_off_s == 300
    assert settings.cb_half_open_max_calls == 1
    assert settings.cb_global_exempt_vendors == []
    assert settings.cb_vendor_overrides == {}


def test_feature_flag_defaults_match_spec() -> None:
    settings = load_settings()
    assert settings.enable_tavily_fallback is True
    assert settings.enable_apify_linkedin is True
    assert settings.enable_lusha_fallback is False
    assert settings.odoo_export_set_defaults is True


def test_http_timeout_defaults_are_two_and_five_seconds() -> None:
    settings = load_settings()
    assert settings.http_connect_timeout_s == 2.0
    assert settings.http_read_timeout_s == 5.0


def test_default_visibility_timeout_passes_its_own_check() -> None:
    settings = load_settings()
    assert settings.broker_visibility_timeout_s > (
        settings.max_retry_countdown_s + settings.task_time_limit_s
    )


# --- reading from the environment -------------------------------------------------------


def test_spec_names_are_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("RETRY_BASE_DELAY_MS", "100")
    monkeypatch.setenv("RETRY_MAX_DELAY_MS", "2000")
    monkeypatch.setenv("CB_ERROR_THRESHOLD", "7")
    monkeypatch.setenv("CB_COOL_OFF_S", "45")
    monkeypatch.setenv("CB_HALF_OPEN_MAX_CALLS", "2")
    monkeypatch.setenv("HTTP_CONNECT_TIMEOUT_S", "1.5")
    monkeypatch.setenv("HTTP_READ_TIMEOUT_S", "9")
    settings = load_settings()
    assert settings.retry_max_attempts == 5
    assert settings.retry_base_delay_ms == 100
    assert settings.retry_max_delay_ms == 2000
    assert settings.cb_error_threshold == 7
    assert settings.cb_cool_off_s == 45.0
    assert settings.cb_half_open_max_calls == 2
    assert settings.http_connect_timeout_s == 1.5
    assert settings.http_read_timeout_s == 9.0


def test_feature_flags_are_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_TAVILY_FALLBACK", "false")
    monkeypatch.setenv("ENABLE_APIFY_LINKEDIN", "0")
    monkeypatch.setenv("ENABLE_LUSHA_FALLBACK", "true")
    monkeypatch.setenv("ODOO_EXPORT_SET_DEFAULTS", "false")
    settings = load_settings()
    assert settings.enable_tavily_fallback is False
    assert settings.enable_apify_linkedin is False
    assert settings.enable_lusha_fallback is True
    assert settings.odoo_export_set_defaults is False


def test_exempt_vendors_are_parsed_as_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_GLOBAL_EXEMPT_VENDORS", "crm, lusha")
    assert load_settings().cb_global_exempt_vendors == ["crm", "lusha"]


def test_exempt_vendors_csv_ignores_blank_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_GLOBAL_EXEMPT_VENDORS", " crm ,, ,lusha, ")
    assert load_settings().cb_global_exempt_vendors == ["crm", "lusha"]


def test_empty_exempt_vendors_env_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_GLOBAL_EXEMPT_VENDORS", "")
    assert load_settings().cb_global_exempt_vendors == []


def test_vendor_overrides_are_parsed_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_threshold": 5, "cool_off_s": 60}}')
    override = load_settings().cb_vendor_overrides["crm"]
    assert override.error_threshold == 5
    assert override.cool_off_s == 60.0
    assert override.success_threshold is None
    assert override.exempt is None


# --- breaker_config resolution ----------------------------------------------------------


def test_breaker_config_applies_vendor_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_threshold": 5, "cool_off_s": 60}}')
    config = load_settings().breaker_config("crm")
    assert config == BreakerConfig(
        error_threshold=5,
        cool_off_s=60.0,
        success_threshold=1,
        half_open_max_calls=1,
        probe_lease_s=30.0,
        exempt=False,
    )


def test_breaker_config_falls_back_to_global_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_ERROR_THRESHOLD", "4")
    monkeypatch.setenv("CB_COOL_OFF_S", "120")
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_threshold": 5}}')
    settings = load_settings()
    other = settings.breaker_config("apollo")
    assert other.error_threshold == 4
    assert other.cool_off_s == 120.0
    assert other.half_open_max_calls == 1
    assert other.exempt is False
    # A partial override keeps the global value for the keys it does not set.
    assert settings.breaker_config("crm").cool_off_s == 120.0


def test_breaker_config_marks_csv_listed_vendors_exempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_GLOBAL_EXEMPT_VENDORS", "crm, lusha")
    settings = load_settings()
    assert settings.breaker_config("crm").exempt is True
    assert settings.breaker_config("lusha").exempt is True
    assert settings.breaker_config("apollo").exempt is False


def test_override_exempt_flag_wins_over_csv_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_GLOBAL_EXEMPT_VENDORS", "crm")
    overrides = '{"crm": {"exempt": false}, "odoo": {"exempt": true}}'
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", overrides)
    settings = load_settings()
    assert settings.breaker_config("crm").exempt is False
    assert settings.breaker_config("odoo").exempt is True


# --- bad values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETRY_MAX_ATTEMPTS", "abc"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("RETRY_BASE_DELAY_MS", "-1"),
        ("CB_ERROR_THRESHOLD", "0"),
        ("CB_COOL_OFF_S", "0"),
        ("CB_HALF_OPEN_MAX_CALLS", "0"),
        ("HTTP_CONNECT_TIMEOUT_S", "0"),
        ("ENABLE_LUSHA_FALLBACK", "maybe"),
        ("DEAD_LETTER_SPOOL_MAX", "0"),
    ],
)
def test_bad_value_raises_settings_error_naming_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert variable in str(info.value)


def test_unknown_key_in_vendor_override_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_treshold": 5}}')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CB_VENDOR_OVERRIDES" in str(info.value)


def test_invalid_value_in_vendor_override_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_threshold": 0}}')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CB_VENDOR_OVERRIDES" in str(info.value)


def test_malformed_vendor_overrides_json_raises_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A start-up typo in the JSON must surface as the product's SettingsError naming the
    # variable, like every other bad value.
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"error_threshold": 5}')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CB_VENDOR_OVERRIDES" in str(info.value)


def test_max_delay_below_base_delay_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BASE_DELAY_MS", "500")
    monkeypatch.setenv("RETRY_MAX_DELAY_MS", "400")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "RETRY_MAX_DELAY_MS" in str(info.value)


def test_max_delay_equal_to_base_delay_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BASE_DELAY_MS", "500")
    monkeypatch.setenv("RETRY_MAX_DELAY_MS", "500")
    assert load_settings().retry_max_delay_ms == 500


# --- visibility timeout vs. the longest countdown ----------------------------------------


def test_visibility_timeout_below_countdown_plus_time_limit_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Longest countdown = max(4 s, RETRY_AFTER_CAP_S 120 s, CB_COOL_OFF_S 300 s) = 300 s
    # (a CRM sync waits out an open breaker); plus the 300 s run = 600 s.
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "580")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "BROKER_VISIBILITY_TIMEOUT_S" in str(info.value)


def test_visibility_timeout_equal_to_the_longest_wait_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "600")
    with pytest.raises(SettingsError, match="BROKER_VISIBILITY_TIMEOUT_S"):
        load_settings()


def test_visibility_timeout_just_above_the_longest_wait_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "601")
    assert load_settings().broker_visibility_timeout_s == 601


def test_a_vendor_breaker_cool_off_raises_the_longest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "1000")
    monkeypatch.setenv("CB_VENDOR_OVERRIDES", '{"crm": {"cool_off_s": 900}}')
    with pytest.raises(SettingsError, match=r"\(1200s\)"):
        load_settings()


def test_visibility_check_accounts_for_task_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "1000")
    monkeypatch.setenv("TASK_TIME_LIMIT_S", "900")
    with pytest.raises(SettingsError, match="BROKER_VISIBILITY_TIMEOUT_S"):
        load_settings()


def test_visibility_check_uses_max_delay_when_above_retry_after_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETRY_MAX_DELAY_MS", "600000")  # 600 s > 120 s cap
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "800")
    with pytest.raises(SettingsError, match="BROKER_VISIBILITY_TIMEOUT_S"):
        load_settings()
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT_S", "901")
    monkeypatch.setenv("RECONCILE_LEASE_S", '{"enrichment": 901, "crm_sync": 901, "export": 901}')
    assert load_settings().max_retry_countdown_s == 600.0


def test_a_lease_must_outlast_a_step_and_its_longest_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECONCILE_LEASE_S", '{"export": 600}')  # 300 s limit + 300 s cool-off
    with pytest.raises(SettingsError, match=r"RECONCILE_LEASE_S \{'export': 600.0\}.*\(600s\)"):
        load_settings()
    monkeypatch.setenv("RECONCILE_LEASE_S", '{"export": 601}')
    leases = load_settings().reconcile_lease_s
    assert leases == {"enrichment": 900.0, "crm_sync": 900.0, "export": 601.0}


def test_a_lease_for_an_unknown_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_LEASE_S", '{"enrichmnet": 1000}')
    with pytest.raises(SettingsError, match=r"RECONCILE_LEASE_S: .*enrichmnet"):
        load_settings()


def test_healing_off_names_tenant_vendor_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(healing_off="7:crm, *:lusha")
    assert not settings.healing_on(7, "crm")
    assert settings.healing_on(8, "crm")
    assert not settings.healing_on(8, "lusha")
    assert not load_settings(healing_off="9:*").healing_on(9, "erp")
    with pytest.raises(SettingsError, match="HEALING_OFF: expected tenant:vendor"):
        load_settings(healing_off="crm")


def test_load_settings_accepts_keyword_overrides() -> None:
    settings = load_settings(retry_max_attempts=7, cb_global_exempt_vendors="a,b")
    assert isinstance(settings, Settings)
    assert settings.retry_max_attempts == 7
    assert settings.cb_global_exempt_vendors == ["a", "b"]


# --- 429s: jitter, pacing, how long a job may be held back ------------------------------


def test_rate_limit_and_pacing_defaults() -> None:
    settings = load_settings()
    assert (settings.retry_after_jitter, settings.retry_after_jitter_max_s) == (0.5, 10.0)
    assert settings.rate_limited_max_s == 3600.0
    assert settings.pacing_enabled is True
    assert (settings.pacing_ceiling_per_s, settings.pacing_floor_per_s) == (20.0, 0.5)
    assert (settings.pacing_decrease, settings.pacing_increase_per_s) == (0.5, 1.0)
    assert (settings.pacing_quiet_s, settings.pacing_max_wait_s) == (120.0, 1.0)


def test_the_longest_countdown_includes_the_largest_jittered_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CB_COOL_OFF_S", "10")
    monkeypatch.setenv("RETRY_AFTER_CAP_S", "100")
    # a pacing pause: what is left of a hold (cap + jitter), jittered again by the task
    assert load_settings().max_retry_countdown_s == 100 + 2 * 10
    monkeypatch.setenv("RETRY_AFTER_JITTER", "0.05")
    assert load_settings().max_retry_countdown_s == 100 + 2 * 5
    monkeypatch.setenv("PACING_FLOOR_PER_S", "0.005")  # a paced slot: 200 s + a wait away
    assert load_settings().max_retry_countdown_s == 200 + 1 + 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETRY_AFTER_JITTER", "1.5"),
        ("PACING_DECREASE", "1"),
        ("PACING_DECREASE", "0"),
        ("PACING_CEILING_PER_S", "0"),
        ("RATE_LIMITED_MAX_S", "0"),
    ],
)
def test_bad_rate_limit_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_pacing_floor_must_be_below_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACING_FLOOR_PER_S", "20")
    with pytest.raises(SettingsError, match=r"PACING_FLOOR_PER_S=20\.0 must be below"):
        load_settings()
