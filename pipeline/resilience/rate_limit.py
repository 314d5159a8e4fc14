"""A request rate per tenant, shared by every worker: a token bucket in Redis.

Keeps a tenant's CRM under the rate its plan allows no matter how many workers sync for it
at once. `take(n)` waits (bounded) until n requests may go; beyond the bound it raises a
retryable `RateLimitedLocallyError` rather than hold a worker indefinitely.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from pipeline.errors import VendorRateLimitError

_BUCKET = (Path(__file__).parent / "lua" / "token_bucket.lua").read_text()


class TenantRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        vendor: str,
        rate_per_s: float,
        burst: int,
        max_wait_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._prefix, self._vendor = prefix, vendor
        self._rate, self._burst, self._max_wait_s = rate_per_s, burst, max_wait_s
        self._clock, self._sleep = clock, sleep
        self._take = client.register_script(_BUCKET)

    def take(self, tenant_id: int, n: int = 1) -> None:
        """Wait until `n` requests for `tenant_id` fit the rate (n is capped at the burst)."""
        n = min(n, self._burst)
        key = f"{self._prefix}:rl:{{{tenant_id}}}:{self._vendor}"
        deadline = self._clock() + self._max_wait_s
        while True:
            wait_ms = int(
                self._take(keys=[key], args=[int(self._clock() * 1000), self._rate, self._burst, n])
            )
            if wait_ms == 0:
                return
            if self._clock() + wait_ms / 1000 > deadline:
                raise VendorRateLimitError(
                    f"{self._vendor}: tenant {tenant_id} over its request rate",
                    vendor=self._vendor,
                    retry_after_s=wait_ms / 1000,
                )
            self._sleep(wait_ms / 1000)
