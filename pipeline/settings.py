"""The one settings object, read from the environment.

Every tunable of the product lives here, so a newcomer finds any knob in one hop and a bad
value stops the process at start-up with the name of the variable that was wrong.
The spec's names (`RETRY_*`, `CB_*`, `ENABLE_*`, `ODOO_*`) are kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from pipeline.errors import SettingsError


class BreakerOverride(BaseModel):
    """Per-vendor breaker settings that differ from the global `CB_*` values."""

    model_config = ConfigDict(extra="forbid")

    error_threshold: int | None = Field(default=None, ge=1)
    cool_off_s: float | None = Field(default=None, gt=0)
    success_threshold: int | None = Field(default=None, ge=1)
    half_open_max_calls: int | None = Field(default=None, ge=1)
    exempt: bool | None = None


@dataclass(frozen=True)
class BreakerConfig:
    """The resolved breaker settings of one vendor (global values with its override applied)."""

    error_threshold: int
    cool_off_s: float
    success_threshold: int
    half_open_max_calls: int
    probe_lease_s: float
    exempt: bool


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Connections
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    redis_url: str = "redis://127.0.0.1:6379/2"
    redis_key_prefix: str = Field(default="pipeline", min_length=1)
    redis_socket_timeout_s: float = Field(default=0.5, gt=0)
    database_url: str = "sqlite:///pipeline.db"
    broker_visibility_timeout_s: int = Field(default=3600, gt=0)
    task_time_limit_s: int = Field(default=300, gt=0)

    # Vendor HTTP
    http_connect_timeout_s: float = Field(default=2.0, gt=0)
    http_read_timeout_s: float = Field(default=5.0, gt=0)

    # Retry policy (spec names)
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_base_delay_ms: int = Field(default=250, gt=0)
    retry_max_delay_ms: int = Field(default=4000, gt=0)
    retry_after_cap_s: float = Field(default=120.0, gt=0)
    retry_jitter_seed: int | None = None

    # Circuit breakers (spec names)
    cb_error_threshold: int = Field(default=3, ge=1)
    cb_cool_off_s: float = Field(default=300.0, gt=0)
    cb_success_threshold: int = Field(default=1, ge=1)
    cb_half_open_max_calls: int = Field(default=1, ge=1)
    cb_probe_lease_s: float = Field(default=30.0, gt=0)
    cb_global_exempt_vendors: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cb_vendor_overrides: dict[str, BreakerOverride] = Field(default_factory=dict)

    # Feature flags (spec names)
    enable_tavily_fallback: bool = True
    enable_apify_linkedin: bool = True
    enable_lusha_fallback: bool = False
    odoo_export_set_defaults: bool = True

    # Logging
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("cb_global_exempt_vendors", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.retry_max_delay_ms < self.retry_base_delay_ms:
            raise ValueError("RETRY_MAX_DELAY_MS must be >= RETRY_BASE_DELAY_MS")
        # A late-acked task held as an ETA message past the visibility timeout is
        # redelivered and runs twice; the longest countdown plus a full run must fit.
        longest = self.max_retry_countdown_s + self.task_time_limit_s
        if self.broker_visibility_timeout_s <= longest:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT_S={self.broker_visibility_timeout_s} must exceed the "
                f"longest retry countdown plus TASK_TIME_LIMIT_S ({longest:.0f}s), or delayed "
                "retries are redelivered and run twice"
            )
        return self

    @property
    def max_retry_countdown_s(self) -> float:
        """The longest countdown the retry policy can hand to Celery."""
        return max(self.retry_max_delay_ms / 1000.0, self.retry_after_cap_s)

    def breaker_config(self, vendor: str) -> BreakerConfig:
        override = self.cb_vendor_overrides.get(vendor, BreakerOverride())

        def pick(name: str, default: Any) -> Any:
            value = getattr(override, name)
            return default if value is None else value

        return BreakerConfig(
            error_threshold=pick("error_threshold", self.cb_error_threshold),
            cool_off_s=pick("cool_off_s", self.cb_cool_off_s),
            success_threshold=pick("success_threshold", self.cb_success_threshold),
            half_open_max_calls=pick("half_open_max_calls", self.cb_half_open_max_calls),
            probe_lease_s=self.cb_probe_lease_s,
            exempt=pick("exempt", vendor in self.cb_global_exempt_vendors),
        )


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
            value = err.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
            problems.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except EnvParseError as exc:  # e.g. a JSON-valued variable that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        raise SettingsError(f"invalid settings: {field.upper()}: not valid JSON") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
