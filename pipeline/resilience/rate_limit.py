"""A request rate per tenant, shared by every worker: a token bucket in Redis.

Keeps a tenant's CRM under the rate its plan allows no matter how many workers sync for it
at once. The bucket lives in one Lua script that reads Redis's own clock, so workers whose
clocks disagree still share one honest rate. `take(n)` waits a little (at most
`max_wait_s`) for tokens; a longer wait raises `TenantRateExceededError` carrying how long,
so the task can step aside and come back instead of holding a worker slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from pipeline.errors import TenantRateExceededError

SCRIPT = (Path(__file__).parent / "lua" / "token_bucket.lua").read_text()


class TenantRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        vendor: str,
        rate_per_s: float,
        burst: int,
        max_wait_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._prefix, self._vendor = prefix, vendor
        self._rate, self._burst, self._max_wait_s = rate_per_s, burst, max_wait_s
        self._sleep = sleep
        self._take = client.register_script(SCRIPT)

    def key(self, tenant_id: int) -> str:
        return f"{self._prefix}:rl:{{{tenant_id}}}:{self._vendor}"

    def take(self, tenant_id: int, n: int = 1) -> None:
        """Wait until `n` requests for `tenant_id` fit the rate (n is capped at the burst);
        `TenantRateExceededError` if that would take longer than `max_wait_s` in all."""
        n = min(n, self._burst)
        waited = 0.0
        while True:
            wait_ms = self._take(keys=[self.key(tenant_id)], args=[self._rate, self._burst, n])
            wait_s = int(wait_ms) / 1000
            if wait_s == 0:
                return
            if waited + wait_s > self._max_wait_s:
                raise TenantRateExceededError(
                    f"{self._vendor}: tenant {tenant_id} over its request rate",
                    vendor=self._vendor,
                    retry_after_s=wait_s,
                )
            self._sleep(wait_s)
            waited += wait_s
