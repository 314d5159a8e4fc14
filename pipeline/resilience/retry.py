"""The one retry policy: capped exponential backoff with full jitter, per error class.

Delay before retry n (n = number of attempts made so far) is uniform in
[0, min(max_delay, base * 2**(n-1))]. A rate limit (429) waits its Retry-After (1 s when the
vendor named none) plus jitter uniform in [0, min(Retry-After * retry_after_jitter,
retry_after_jitter_max_s)]: never sooner than asked, and the callers one 429 storm turned
away come back spread over a window in proportion to the wait (half of it by default, at
most 10 s) instead of all at the same millisecond — the burst that earned the next 429.
Whether an error is retried at all is the error's own `retryable` flag (see
`pipeline.errors`): server errors and timeouts yes; client, auth and circuit-open errors no.

The same object drives in-process retries (`policy.retrying()`, a tenacity `Retrying`) and
Celery task retries (`ResilientTask` asks `delay_for` and passes the float as countdown,
keeping millisecond precision that Celery's own integer backoff loses).

Randomness is injectable: pass `rng`, or (for tests) a `seed` — then the jitter for one
`key` (a task id) and attempt is the same in every process, so a retried task's countdowns
are reproducible. A seed applies only where a key is given: a shared seed with no key would
make every process wait the same delays, the very herd jitter exists to break.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from pipeline import metrics
from pipeline.errors import (
    RetriesExhaustedError,
    VendorError,
    VendorRateLimitError,
    is_transient,
)
from pipeline.settings import Settings

T = TypeVar("T")
# A 429 that names no Retry-After is waited out as if it said this.
ASSUMED_RETRY_AFTER_S = 1.0


class RetryPolicy:
    def __init__(
        self,
        *,
        max_attempts: int,
        base_delay_ms: int,
        max_delay_ms: int,
        retry_after_cap_s: float,
        outage_base_delay_ms: int = 1000,
        outage_max_delay_ms: int = 30000,
        outage_max_s: float = 600.0,
        paused_max_s: float = 3600.0,
        retry_after_jitter: float = 0.5,
        retry_after_jitter_max_s: float = 10.0,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_ms / 1000.0
        self.max_delay_s = max_delay_ms / 1000.0
        self.retry_after_cap_s = retry_after_cap_s
        self.outage_base_delay_s = outage_base_delay_ms / 1000.0
        self.outage_max_delay_s = outage_max_delay_ms / 1000.0
        self.outage_max_s = outage_max_s
        self.paused_max_s = paused_max_s
        self.retry_after_jitter = retry_after_jitter
        self.retry_after_jitter_max_s = retry_after_jitter_max_s
        self.seed = seed
        self._rng = rng or random.SystemRandom()

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            base_delay_ms=settings.retry_base_delay_ms,
            max_delay_ms=settings.retry_max_delay_ms,
            retry_after_cap_s=settings.retry_after_cap_s,
            outage_base_delay_ms=settings.db_retry_base_delay_ms,
            outage_max_delay_ms=settings.db_retry_max_delay_ms,
            outage_max_s=settings.db_outage_max_s,
            paused_max_s=settings.rate_limited_max_s,
            retry_after_jitter=settings.retry_after_jitter,
            retry_after_jitter_max_s=settings.retry_after_jitter_max_s,
            seed=settings.retry_jitter_seed,
            **kw,
        )

    def backoff_cap_s(self, attempt: int) -> float:
        """Upper bound of the jittered delay after `attempt` attempts."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))

    def will_retry(self, attempt: int, error: BaseException) -> bool:
        if attempt >= self.max_attempts or not is_transient(error):
            return False
        retry_after = getattr(error, "retry_after_s", None)
        # Waiting longer than the cap would outlive the broker's visibility timeout.
        return retry_after is None or retry_after <= self.retry_after_cap_s

    def delay_for(self, attempt: int, error: BaseException, *, key: str = "") -> float | None:
        """Seconds to wait before the next attempt, or None when the error is final."""
        if not self.will_retry(attempt, error):
            return None
        rng = self._rng_for(key, attempt)
        delay = rng.uniform(0.0, self.backoff_cap_s(attempt))
        if isinstance(error, VendorRateLimitError):
            delay = max(delay, self._retry_after_wait(error.retry_after_s, rng))
        return round(delay, 3)

    def outage_delay(self, attempt: int, outage_s: float, *, key: str = "") -> float | None:
        """Seconds to wait before trying again while our own database is away, `outage_s`
        into the outage (None: it has lasted DB_OUTAGE_MAX_S — give up). Backoff doubles
        from DB_RETRY_BASE_DELAY_MS up to DB_RETRY_MAX_DELAY_MS, jittered within the upper
        half of that cap: every wait is real (unlike full jitter's near-zero draws), so a
        task's attempts span the whole outage it is allowed to outlast, and many tasks
        that lost the database together do not all come back together."""
        if outage_s >= self.outage_max_s:
            return None
        cap = min(self.outage_max_delay_s, self.outage_base_delay_s * 2 ** (attempt - 1))
        delay = self._rng_for(key, attempt, ":outage").uniform(cap / 2, cap)
        return round(min(delay, self.outage_max_s - outage_s + cap / 2), 3)

    def pause_delay(self, retry_after_s: float, paused_s: float, *, key: str = "") -> float | None:
        """Seconds to step aside for a vendor (or our own pacing) that asked us to slow down,
        `paused_s` into the pause (None: paused for RATE_LIMITED_MAX_S — give up). A pause
        spends no attempt; it waits what was asked plus jitter (`retry_after_wait`), so
        callers told the same Retry-After do not come back in one burst."""
        if paused_s >= self.paused_max_s:
            return None
        return self.retry_after_wait(retry_after_s, key=key, attempt=int(paused_s * 1000) + 1)

    def retry_after_wait(
        self, retry_after_s: float | None, *, key: str = "", attempt: int = 1
    ) -> float:
        """Seconds to wait on a rate limit: its Retry-After (`ASSUMED_RETRY_AFTER_S` when
        None; at most the cap), plus jitter — see the module docstring. Seeded like
        `delay_for` (by `key` and `attempt`) when the policy has a seed and a key is given."""
        return round(self._retry_after_wait(retry_after_s, self._rng_for(key, attempt, "ra")), 3)

    def retry_after_jitter_max(self, retry_after_s: float | None) -> float:
        """The largest jitter added to this Retry-After."""
        wait = self._retry_after_base(retry_after_s)
        return min(wait * self.retry_after_jitter, self.retry_after_jitter_max_s)

    def _retry_after_base(self, retry_after_s: float | None) -> float:
        wait = ASSUMED_RETRY_AFTER_S if retry_after_s is None else retry_after_s
        return min(max(wait, 0.0), self.retry_after_cap_s)

    def _retry_after_wait(self, retry_after_s: float | None, rng: random.Random) -> float:
        base = self._retry_after_base(retry_after_s)
        return base + rng.uniform(0.0, self.retry_after_jitter_max(retry_after_s))

    def _rng_for(self, key: str, attempt: int, salt: str = "") -> random.Random:
        if self.seed is not None and key:
            return random.Random(f"{self.seed}:{key}:{attempt}{salt}")
        return self._rng

    def retrying(self, *, sleep: Callable[[float], None] = time.sleep, key: str = "") -> Any:
        """A tenacity `Retrying` that follows this policy (re-raises the last error)."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if error is None:
                return 0.0
            return self.delay_for(state.attempt_number, error, key=key) or 0.0

        def retry(state: tenacity.RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            return error is not None and self.will_retry(state.attempt_number, error)

        def count(state: tenacity.RetryCallState) -> None:
            if state.outcome is not None and state.outcome.exception() is not None:
                metrics.count_retry(state.outcome.exception())  # type: ignore[arg-type]

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry,
            sleep=sleep,
            before_sleep=count,
            reraise=True,
        )

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        sleep: Callable[[float], None] = time.sleep,
        key: str = "",
        **kwargs: Any,
    ) -> T:
        """Run `fn` under the policy; a retryable error that outlasts it becomes
        `RetriesExhaustedError` (other errors propagate unchanged)."""
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return fn(*args, **kwargs)

        try:
            return self.retrying(sleep=sleep, key=key)(attempt)
        except VendorError as exc:
            final = self.final_error(exc, attempts)
            if final is exc:
                raise
            raise final from exc

    def final_error(self, error: BaseException, attempts: int) -> BaseException:
        """What to raise once the policy stops retrying `error` after `attempts` attempts.

        A retryable error that used up every attempt becomes `RetriesExhaustedError` (with
        the last error's code in its details); anything else — a non-retryable error, or a
        Retry-After longer than the cap — is raised as it is, its own code intact.
        """
        if isinstance(error, VendorError) and error.retryable and attempts >= self.max_attempts:
            return RetriesExhaustedError(
                f"gave up on {error.vendor or 'vendor'} after {attempts} attempts: {error.message}",
                last_error=error,
                attempts=attempts,
            )
        return error
