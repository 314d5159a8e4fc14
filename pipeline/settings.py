"""The one settings object, read from the environment.

Every tunable of the product lives here, so a newcomer finds any knob in one hop and a bad
value stops the process at start-up with the name of the variable that was wrong.
The spec's names (`RETRY_*`, `CB_*`, `ENABLE_*`, `ODOO_*`) are kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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
    # A message whose worker process dies this many times is dead-lettered, not run again.
    task_max_deliveries: int = Field(default=3, ge=1)
    # A lease (one export per tenant; pipeline.resilience.lease) lives this long unless its
    # holder's heartbeat renews it (every third of it): a killed holder's frees itself in
    # seconds. Above 3 x REDIS_SOCKET_TIMEOUT_S, so two renewals can fail before it lapses.
    lease_ttl_s: float = Field(default=15.0, gt=0)
    # Dead letters that could not be written (database down) wait in a Redis list of at most
    # this many, newest kept, until drained (pipeline.dead_letters.drain_spool).
    dead_letter_spool_max: int = Field(default=10_000, ge=1)

    # The reconciler (pipeline.reconciler), run by beat every RECONCILE_INTERVAL_S and by
    # `pipeline reconcile`: an open item that has not moved for its kind's lease, although
    # its queue was seen empty meanwhile, is re-driven from its last durable step; one
    # re-driven RECONCILE_MAX_REDRIVES times is dead-lettered as `stalled`.
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    reconcile_lease_s: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_LEASES_S)
    )
    reconcile_max_redrives: int = Field(default=3, ge=1)

    # Our own database going away: tasks retry on this curve (full jitter above half the
    # cap, so every wait is real) until DB_OUTAGE_MAX_S after the first failure, and are
    # never acked as done meanwhile.
    db_retry_base_delay_ms: int = Field(default=1000, gt=0)
    db_retry_max_delay_ms: int = Field(default=30000, gt=0)
    db_outage_max_s: float = Field(default=600.0, gt=0)

    # Healing (pipeline.healing): work deferred because a vendor was down is redone once it
    # is back — within HEAL_WINDOW_S of the deferral, at most HEAL_MAX_ATTEMPTS times, at
    # least HEAL_BACKOFF_S apart; HEALING_OFF lists tenant:vendor pairs (* for any) that
    # never heal.
    heal_window_s: float = Field(default=86400.0, gt=0)
    heal_max_attempts: int = Field(default=5, ge=1)
    heal_backoff_s: float = Field(default=60.0, ge=0)
    healing_off: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Vendor HTTP
    http_connect_timeout_s: float = Field(default=2.0, gt=0)
    http_read_timeout_s: float = Field(default=5.0, gt=0)

    # Retry policy (spec names)
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_base_delay_ms: int = Field(default=250, gt=0)
    retry_max_delay_ms: int = Field(default=4000, gt=0)
    retry_after_cap_s: float = Field(default=120.0, gt=0)
    retry_jitter_seed: int | None = None
    # A 429's wait is its Retry-After plus jitter uniform in
    # [0, min(Retry-After x RETRY_AFTER_JITTER, RETRY_AFTER_JITTER_MAX_S)]: never sooner
    # than the vendor asked, and callers it turned away together do not come back together.
    retry_after_jitter: float = Field(default=0.5, ge=0, le=1)
    retry_after_jitter_max_s: float = Field(default=10.0, ge=0)
    # A job held back by rate limits (429s, pacing) this long without progress stops
    # (CRM sync: CRM_UNAVAILABLE:RATE_LIMITED); until then a 429 only delays it, spending
    # no retry attempt.
    rate_limited_max_s: float = Field(default=3600.0, gt=0)

    # Adaptive pacing per (tenant, vendor) (pipeline.resilience.pacing): a 429 holds every
    # worker back until its Retry-After (+ jitter) and cuts the pair's allowed rate
    # (x PACING_DECREASE, from PACING_CEILING_PER_S on the first one, never below
    # PACING_FLOOR_PER_S); each success adds PACING_INCREASE_PER_S / rate, so the rate grows
    # by about PACING_INCREASE_PER_S calls/s per second of calls; at the ceiling, or after
    # PACING_QUIET_S without a 429, pacing switches off. A call held back longer than
    # PACING_MAX_WAIT_S is not made: VendorPacedError, a pause, not a failure.
    pacing_enabled: bool = True
    pacing_ceiling_per_s: float = Field(default=20.0, gt=0)
    pacing_floor_per_s: float = Field(default=0.5, gt=0)
    pacing_decrease: float = Field(default=0.5, gt=0, lt=1)
    pacing_increase_per_s: float = Field(default=1.0, gt=0)
    pacing_quiet_s: float = Field(default=120.0, gt=0)
    pacing_max_wait_s: float = Field(default=1.0, ge=0)

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

    # Vendors: where they are, our keys for them, and how many calls may be in flight
    vendor_base_url: str = "http://127.0.0.1:8700"
    vendor_urls: dict[str, str] = Field(default_factory=dict)
    vendor_api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    bulkhead_default_limit: int = Field(default=16, ge=1)
    bulkhead_limits: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    bulkhead_wait_ms: int = Field(default=500, ge=0)

    # Credentials at rest: comma-separated Fernet keys, newest first (pipeline.credentials)
    pipeline_secret_key: SecretStr | None = None

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = True

    # ERP export: fields dropped when the ERP refuses them; defaults filled first
    export_strippable_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["autopost_bills", "website"]
    )
    export_defaults: dict[str, Any] = Field(
        default_factory=lambda: {"customer_rank": 1, "autopost_bills": "ask"}
    )

    # CRM sync: records per batch write, and each tenant's request rate across all workers
    crm_batch_size: int = Field(default=50, ge=1, le=500)
    crm_rate_per_s: float = Field(default=20.0, gt=0)
    crm_burst: int = Field(default=40, ge=1)

    # CRM OAuth tokens (pipeline.crm_tokens): cached until margin + jitter before expiry
    crm_token_refresh_margin_s: float = Field(default=60.0, ge=0)
    crm_token_jitter_s: float = Field(default=30.0, ge=0)
    crm_token_lock_wait_s: float = Field(default=20.0, gt=0)
    crm_token_poll_s: float = Field(default=0.05, gt=0)

    # Metrics (pipeline.metrics): the directory prometheus-client's multiprocess mode shares
    # between a worker's processes (the same variable the library reads), and where the
    # worker's main process serves them (no port: it serves none).
    prometheus_multiproc_dir: str | None = None
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_address: str = "0.0.0.0"

    # Flower (`pipeline flower`): basic auth, never without a password
    flower_user: str = Field(default="admin", min_length=1, pattern=r"^[^:,]+$")
    flower_password: SecretStr | None = None
    flower_port: int = Field(default=5555, ge=1, le=65535)

    # Web API (pipeline.api): where `pipeline api` listens, and /health/dependencies
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    health_cache_s: float = Field(default=5.0, ge=0)
    health_probe_timeout_s: float = Field(default=1.0, gt=0)
    health_worker_seen_s: float = Field(default=60.0, gt=0)
    health_vendor_open_share: float = Field(default=0.5, gt=0, le=1)
    # A key that authenticated is trusted this long without asking Postgres again (so the
    # API answers, /health/dependencies included, while Postgres is down); a revocation
    # takes effect within it. 0: ask Postgres every time.
    api_key_cache_s: float = Field(default=60.0, ge=0)
    # A request body larger than this is refused (413) before it is read; one that has not
    # arrived in full this long after the request began is given up (408), so a slow client
    # cannot hold a connection and a worker thread.
    api_max_body_bytes: int = Field(default=1_048_576, ge=1, le=1_073_741_824)
    api_body_timeout_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator(
        "cb_global_exempt_vendors", "export_strippable_fields", "healing_off", mode="before"
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            if any(ch in value for ch in '[]"{}'):
                raise ValueError("expected comma-separated vendor names, e.g. crm,lusha")
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("healing_off")
    @classmethod
    def _tenant_vendor_pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            tenant, _, vendor = pair.partition(":")
            if not vendor or not (tenant == "*" or tenant.isdigit()):
                raise ValueError("expected tenant:vendor pairs (* for any), e.g. 7:crm,*:lusha")
        return value

    @field_validator("reconcile_lease_s", mode="before")
    @classmethod
    def _leases_per_kind(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(DEFAULT_LEASES_S))
            if unknown:
                raise ValueError(
                    f"unknown run kinds {unknown}; expected {sorted(DEFAULT_LEASES_S)}"
                )
            return {**DEFAULT_LEASES_S, **value}
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("broker_url", "redis_url", "result_backend")
    @classmethod
    def _known_scheme(cls, value: str, info: Any) -> str:
        schemes = _RESULT_SCHEMES if info.field_name == "result_backend" else _BROKER_SCHEMES
        if urlsplit(value).scheme not in schemes:
            raise ValueError(f"expected a URL with scheme {'/'.join(sorted(schemes))}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return checked_database_url(value)

    @field_validator("flower_password")
    @classmethod
    def _flower_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "," in value.get_secret_value():
            # Flower splits its basic-auth option on commas: such a password never matches.
            raise ValueError("must not contain a comma (Flower splits its credentials on them)")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.retry_max_delay_ms < self.retry_base_delay_ms:
            raise ValueError("RETRY_MAX_DELAY_MS must be >= RETRY_BASE_DELAY_MS")
        if self.worker_metrics_port is not None and not self.prometheus_multiproc_dir:
            raise ValueError(
                "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: the pool's processes "
                "count the metrics, and only through that directory can the port show them"
            )
        # A late-acked task held as an ETA message past the visibility timeout is
        # redelivered and runs twice; the longest countdown plus a full run must fit.
        if self.lease_ttl_s <= 3 * self.redis_socket_timeout_s:
            raise ValueError(
                f"LEASE_TTL_S={self.lease_ttl_s} must exceed 3 x REDIS_SOCKET_TIMEOUT_S "
                f"({3 * self.redis_socket_timeout_s:g}s): a lease is renewed every third of its "
                "TTL, and a renewal Redis does not answer takes a socket timeout; below that, "
                "one slow renewal lets the lease lapse while its holder works"
            )
        longest_call = self.http_connect_timeout_s + self.http_read_timeout_s
        if self.cb_probe_lease_s <= longest_call:
            raise ValueError(
                f"CB_PROBE_LEASE_S={self.cb_probe_lease_s} must exceed HTTP_CONNECT_TIMEOUT_S + "
                f"HTTP_READ_TIMEOUT_S ({longest_call:.0f}s), or a slow probe's lease expires "
                "while it runs and a second probe goes through"
            )
        longest = self.max_retry_countdown_s + self.task_time_limit_s
        if self.broker_visibility_timeout_s <= longest:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT_S={self.broker_visibility_timeout_s} must exceed the "
                f"longest retry countdown plus TASK_TIME_LIMIT_S ({longest:.0f}s), or delayed "
                "retries are redelivered and run twice"
            )
        short = {kind: lease for kind, lease in self.reconcile_lease_s.items() if lease <= longest}
        if short:
            raise ValueError(
                f"RECONCILE_LEASE_S {short} must exceed the longest retry countdown plus "
                f"TASK_TIME_LIMIT_S ({longest:.0f}s): a step may legitimately be silent that "
                "long, and re-driving it would only run it twice"
            )
        if self.pacing_floor_per_s >= self.pacing_ceiling_per_s:
            raise ValueError(
                f"PACING_FLOOR_PER_S={self.pacing_floor_per_s} must be below "
                f"PACING_CEILING_PER_S={self.pacing_ceiling_per_s}"
            )
        if self.db_retry_max_delay_ms < self.db_retry_base_delay_ms:
            raise ValueError("DB_RETRY_MAX_DELAY_MS must be >= DB_RETRY_BASE_DELAY_MS")
        return self

    @property
    def embedded(self) -> bool:
        """State in this process's memory instead of Redis (single-process demo mode)."""
        return self.redis_url.startswith("memory://")

    @property
    def max_retry_countdown_s(self) -> float:
        """The longest countdown a task can hand to Celery: the retry policy's (a 429's
        Retry-After up to its cap, plus the largest jitter), a pacing pause (what is left of
        a pacing hold — itself such a wait — or of the way to a paced slot, at most a wait
        plus one interval at the floor rate; jittered once more by the pausing task), or a
        breaker's cool-off (a CRM sync waits out an open breaker)."""
        cool_offs = [self.cb_cool_off_s] + [
            o.cool_off_s for o in self.cb_vendor_overrides.values() if o.cool_off_s is not None
        ]
        jitter = min(
            self.retry_after_cap_s * self.retry_after_jitter, self.retry_after_jitter_max_s
        )
        paced_slot = self.pacing_max_wait_s + 1.0 / self.pacing_floor_per_s
        return max(
            self.retry_max_delay_ms / 1000.0,
            self.retry_after_cap_s + 2 * jitter,
            paced_slot + jitter,
            self.db_retry_max_delay_ms / 1000.0,
            *cool_offs,
        )

    def lease_s(self, kind: str) -> float:
        """How long an open item of this run kind may go without moving (see above)."""
        return self.reconcile_lease_s.get(kind, max(self.reconcile_lease_s.values()))

    def healing_on(self, tenant_id: int, vendor: str) -> bool:
        off = set(self.healing_off)
        return not ({f"{tenant_id}:{vendor}", f"*:{vendor}", f"{tenant_id}:*", "*:*"} & off)

    def vendor_url(self, vendor: str) -> str:
        return self.vendor_urls.get(vendor) or f"{self.vendor_base_url.rstrip('/')}/{vendor}"

    def vendor_api_key(self, vendor: str) -> str:
        key = self.vendor_api_keys.get(vendor)
        return key.get_secret_value() if key else ""

    def bulkhead_limit(self, vendor: str) -> int:
        return self.bulkhead_limits.get(vendor, self.bulkhead_default_limit)

    @property
    def bulkhead_slot_ttl_s(self) -> float:
        """A slot outlives the longest call it guards; a dead worker's slot then frees itself."""
        return self.http_connect_timeout_s + self.http_read_timeout_s + 5.0

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


# Each run kind's default lease (RECONCILE_LEASE_S): above TASK_TIME_LIMIT_S plus the longest
# retry countdown with the defaults (300 s + 300 s), so only work that is really lost moves.
DEFAULT_LEASES_S: dict[str, float] = {"enrichment": 900.0, "crm_sync": 900.0, "export": 900.0}


def checked_database_url(url: str) -> str:
    """`url` with the driver we ship named: a bare `postgresql://` (or `postgres://`) means
    psycopg2 — SQLAlchemy 2.1 would pick psycopg 3, which is not installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    if not sep or scheme not in ("sqlite", "postgresql+psycopg2"):
        raise ValueError("expected sqlite:///path or postgresql+psycopg2://user@host/db")
    return url


_BROKER_SCHEMES = {"redis", "rediss", "memory", "amqp", "pyamqp"}
_RESULT_SCHEMES = {"redis", "rediss", "cache+memory", "rpc"}
# Values of these are never echoed in an error: they may hold passwords or keys.
_SECRET_FIELDS = {
    "broker_url",
    "result_backend",
    "redis_url",
    "database_url",
    "vendor_api_keys",
    "vendor_urls",
    "pipeline_secret_key",
    "flower_password",
}


def _variable(loc: tuple[Any, ...]) -> str:
    """('cb_vendor_overrides', 'crm', 'x') → 'CB_VENDOR_OVERRIDES: crm.x'."""
    name = str(loc[0]).upper()
    return f"{name}: {'.'.join(str(p) for p in loc[1:])}" if len(loc) > 1 else name


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            value = err.get("input")
            secret = bool(loc) and str(loc[0]) in _SECRET_FIELDS
            shown = (
                "" if secret or not isinstance(value, str | int | float) else f" (got {value!r})"
            )
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_variable(loc)}: {message}{shown}" if loc else message)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except EnvParseError as exc:  # a JSON-valued variable that is not JSON
        named = [n for n in Settings.model_fields if f'"{n}"' in str(exc)]
        variable = named[0].upper() if named else "a JSON-valued variable"
        raise SettingsError(f"invalid settings: {variable}: not valid JSON") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
