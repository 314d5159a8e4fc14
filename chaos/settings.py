"""The chaos stack's settings: short limits so that faults play out in seconds, computed from a
few base numbers so that they pass `pipeline.settings` validation by construction.

What validation demands (`Settings._check_consistency`), and how it is met here:

- `CB_PROBE_LEASE_S` > `HTTP_CONNECT_TIMEOUT_S` + `HTTP_READ_TIMEOUT_S` (1 + 1): 5;
- the longest retry countdown (`Settings.max_retry_countdown_s`) is a 429's wait:
  `RETRY_AFTER_CAP_S` (3) plus twice its largest jitter (3 x `RETRY_AFTER_JITTER` 0.5),
  6 s — above `RETRY_MAX_DELAY_MS`, `DB_RETRY_MAX_DELAY_MS` (3 s), `CB_COOL_OFF_S` (2 s) and
  a paced slot (1 + 1/0.5 + 1.5 s); plus `TASK_TIME_LIMIT_S` (25) that is 31 s, which
  `BROKER_VISIBILITY_TIMEOUT_S` must exceed (32: just above, so a worker's unacknowledged
  messages come back soon after it dies) and every `RECONCILE_LEASE_S` too (33).

Why `TASK_TIME_LIMIT_S` is 25 and not 15: the soft limit is the hard one minus 10 s, and a CRM
sync works for half the hard limit before it continues in a fresh task — at 15 that is 7.5 s
of work under a 5 s soft limit, and a slow CRM would kill syncs by their soft limit instead
of exercising the product. At 25 the soft limit (15 s) outlasts the sync's 12.5 s budget plus
one batch.

`build_env` also refuses any setting that would point at the machine's shared Redis or
Postgres: the suite only ever uses the private instances it started.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

TASK_TIME_LIMIT_S = 25
HTTP_TIMEOUT_S = 1.0
RETRY_AFTER_CAP_S = 3.0
LONGEST_COUNTDOWN_S = RETRY_AFTER_CAP_S * 2  # the cap plus twice its jitter (0.5 x cap)
VISIBILITY_TIMEOUT_S = int(LONGEST_COUNTDOWN_S + TASK_TIME_LIMIT_S) + 1
LEASE_S = VISIBILITY_TIMEOUT_S + 1
KINDS = ("enrichment", "crm_sync", "export")
SHARED_PORTS = {6379, 5432}
# The key prefix of everything the chaos stack writes to its Redis.
KEY_PREFIX = "chaos"


def build_env(*, redis_port: int, database_url: str, simulator_url: str) -> dict[str, str]:
    """The environment of every process of the chaos stack (workers, beat, this one)."""
    redis = f"redis://127.0.0.1:{redis_port}"
    env = {
        "BROKER_URL": f"{redis}/0",
        "RESULT_BACKEND": f"{redis}/1",
        "REDIS_URL": f"{redis}/2",
        "REDIS_KEY_PREFIX": KEY_PREFIX,
        "DATABASE_URL": database_url,
        "VENDOR_BASE_URL": simulator_url,
        "PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
        "LOG_JSON": "false",
        "LOG_LEVEL": "INFO",
        # Limits and timeouts
        "TASK_TIME_LIMIT_S": str(TASK_TIME_LIMIT_S),
        "BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "HTTP_CONNECT_TIMEOUT_S": str(HTTP_TIMEOUT_S),
        "HTTP_READ_TIMEOUT_S": str(HTTP_TIMEOUT_S),
        # Retries: vendors, Retry-After, our own database
        "RETRY_BASE_DELAY_MS": "100",
        "RETRY_MAX_DELAY_MS": "1000",
        "RETRY_AFTER_CAP_S": str(RETRY_AFTER_CAP_S),
        "DB_RETRY_BASE_DELAY_MS": "200",
        "DB_RETRY_MAX_DELAY_MS": "3000",
        "DB_OUTAGE_MAX_S": "180",  # outlasts the longest database outage played (60 s)
        # Breakers
        "CB_COOL_OFF_S": "2",
        "CB_PROBE_LEASE_S": "5",
        # Housekeeping: the reconciler (beat), leases, healing
        "RECONCILE_INTERVAL_S": "1",
        "RECONCILE_LEASE_S": json.dumps({kind: LEASE_S for kind in KINDS}),
        "LEASE_TTL_S": "5",
        "HEAL_BACKOFF_S": "1",
        "HEAL_WINDOW_S": "600",
        "HEAL_MAX_ATTEMPTS": "5",
        # Smaller CRM batches: a sync makes enough requests for faults to meet it mid-way
        "CRM_BATCH_SIZE": "20",
    }
    check_private(env, redis_port=redis_port)
    return env


def check_private(env: dict[str, str], *, redis_port: int) -> None:
    """Refuse settings that could reach the machine's shared Redis or Postgres."""
    for name in ("BROKER_URL", "RESULT_BACKEND", "REDIS_URL", "DATABASE_URL"):
        parts = urlsplit(env[name])
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            raise RuntimeError(f"chaos: {name} must name a loopback port of its own")
        if parts.port in SHARED_PORTS:
            raise RuntimeError(f"chaos: {name} points at the shared port {parts.port}")
        if name != "DATABASE_URL" and parts.port != redis_port:
            raise RuntimeError(f"chaos: {name} is not the private redis-server")


def max_lease_s() -> float:
    return float(LEASE_S)
