"""Adaptive pacing per (tenant, vendor): a vendor's 429 slows down every worker, not one call.

A 429 is back-pressure. Retrying the one call later is not enough: every other worker keeps
calling at the rate that earned it, and each gets its own 429. So a 429 (`throttled`)
- holds every caller of the pair back until its Retry-After (plus jitter) has passed, and
- cuts the pair's allowed rate (multiplicative decrease: the first 429 starts pacing at
  `ceiling_per_s` x `decrease`; one cut per window, so the 429s of calls already in flight
  only extend the hold), never below `floor_per_s`;
each paced call that succeeds (`succeeded`) raises it again (additive increase, `rate +=
increase_per_s / rate`: about `increase_per_s` calls/s more per second of calls), until it
reaches the ceiling and pacing switches itself off; so does a pair that met no 429 for
`quiet_s` after its hold. Calls of a paced pair go out one slot apart (a GCRA: one "next free
slot" time), shared by all processes.

Cost: the state is four fields in the pair's breaker hash, which the breaker's admit already
reads with one HMGET on every call (`Ticket.pace`), so a pair that is not paced costs no
round trip at all. A paced pair costs a script per call (`pace_acquire.lua`) and one per
success. Where the breaker read nothing (an exempt vendor, a half-open probe, Redis marked
down), this process asks Redis itself only for pairs it saw throttled within `quiet_s`.

A call whose slot is at most `max_wait_s` away waits for it here; a longer wait raises
`VendorPacedError(retry_after_s=...)` and no request is made: a pause (neutral to the
breaker, no retry budget spent) that the task turns into coming back later. If Redis is
unreachable calls go unpaced: pacing protects the vendor, it must not become an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import structlog

from pipeline.breakers.contract import PaceFields
from pipeline.breakers.storage import breaker_key
from pipeline.errors import VendorPacedError, VendorRateLimitError

log = structlog.get_logger(__name__)
_LUA = Path(__file__).parent / "lua"
_PACING_FIELDS = ("pr", "pu", "pt", "pd")
_REDIS_DOWN_BACKOFF_S = 5.0
_MAX_WATCHED = 10_000


@dataclass(frozen=True, slots=True)
class Pass:
    """A call pacing let go: when (epoch ms), and whether it took a paced slot."""

    sent_ms: int
    paced: bool


@dataclass(frozen=True)
class PaceState:
    """A pair's pacing as stored (for tests and operators): rate 0 means not paced."""

    rate: float
    hold_until_ms: int
    next_slot_ms: int


class Pacer:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ceiling_per_s: float,
        floor_per_s: float,
        decrease: float,
        increase_per_s: float,
        quiet_s: float,
        max_wait_s: float,
        hold_for: Callable[[float | None], float],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`hold_for(retry_after_s)`: seconds to hold the pair after a 429 that said this
        (the retry policy's `retry_after_wait`: Retry-After, capped, plus jitter)."""
        self._redis = client
        self._prefix = prefix
        self._ceiling, self._floor = ceiling_per_s, floor_per_s
        self._decrease, self._increase = decrease, increase_per_s
        self._quiet_ms = int(quiet_s * 1000)
        self._max_wait_ms = int(max_wait_s * 1000)
        self._hold_for = hold_for
        self._clock, self._sleep, self._monotonic = clock, sleep, monotonic
        self._acquire = client.register_script((_LUA / "pace_acquire.lua").read_text())
        self._throttle = client.register_script((_LUA / "pace_throttled.lua").read_text())
        self._succeed = client.register_script((_LUA / "pace_succeeded.lua").read_text())
        self._watched: dict[tuple[int, str], float] = {}  # pair -> watch until (monotonic)
        self._down_until = 0.0

    def key(self, tenant_id: int, vendor: str) -> str:
        return breaker_key(self._prefix, tenant_id, vendor)

    # -- the call path -------------------------------------------------------------------------

    def admit(self, tenant_id: int, vendor: str, seen: PaceFields | None) -> Pass:
        """Let one call go: at once if the pair is not paced, else at its slot (waiting up to
        `max_wait_s`). `seen`: the pacing fields the breaker's read found (None: not read).
        Raises `VendorPacedError` when the call must wait longer; nothing is sent then."""
        now_ms = self._now_ms()
        if seen is None:
            if not self._watching(tenant_id, vendor):
                return Pass(now_ms, paced=False)
        elif not seen.active:
            return Pass(now_ms, paced=False)
        elif seen.hold_until_ms - now_ms > self._max_wait_ms:  # held: no need to ask Redis
            raise self._held_back(tenant_id, vendor, seen.hold_until_ms - now_ms)
        if not self._redis_up():
            return Pass(now_ms, paced=False)
        key = self.key(tenant_id, vendor)
        try:
            wait_ms, taken = self._acquire(
                keys=[key], args=[now_ms, self._max_wait_ms, self._quiet_ms]
            )
        except redis.RedisError as exc:
            self._mark_down("acquire", exc)
            return Pass(now_ms, paced=False)
        wait_ms = int(wait_ms)
        if int(taken):
            if wait_ms > 0:
                self._sleep(wait_ms / 1000)
            return Pass(self._now_ms(), paced=True)
        if wait_ms == 0:  # pacing has switched itself off
            self._watched.pop((tenant_id, vendor), None)
            return Pass(now_ms, paced=False)
        raise self._held_back(tenant_id, vendor, wait_ms)

    def throttled(
        self, tenant_id: int, vendor: str, error: VendorRateLimitError, sent: Pass
    ) -> None:
        """The vendor answered a call let go by `sent` with 429: hold the pair, cut its rate."""
        hold_s = self._hold_for(error.retry_after_s)
        self._watch(tenant_id, vendor, hold_s)
        if not self._redis_up():
            return
        args = [
            self._now_ms(),
            sent.sent_ms,
            int(hold_s * 1000),
            self._ceiling,
            self._decrease,
            self._floor,
        ]
        try:
            rate = self._throttle(keys=[self.key(tenant_id, vendor)], args=args)
        except redis.RedisError as exc:
            self._mark_down("throttled", exc)
            return
        log.info(
            "pacing.throttled",
            tenant_id=tenant_id,
            vendor=vendor,
            rate_per_s=round(float(rate), 3),
            hold_ms=int(hold_s * 1000),
        )

    def succeeded(self, tenant_id: int, vendor: str, sent: Pass) -> None:
        """A call let go by `sent` succeeded: if it was paced, raise the pair's rate."""
        if not sent.paced or not self._redis_up():
            return
        try:
            rate = float(
                self._succeed(
                    keys=[self.key(tenant_id, vendor)], args=[self._increase, self._ceiling]
                )
            )
        except redis.RedisError as exc:
            self._mark_down("succeeded", exc)
            return
        if rate == 0:
            self._watched.pop((tenant_id, vendor), None)
            log.info("pacing.off", tenant_id=tenant_id, vendor=vendor)

    def state(self, tenant_id: int, vendor: str) -> PaceState:
        """The pair's stored pacing (raises on Redis errors: an operator must not be told
        "not paced" by a dead Redis)."""
        rate, hold, slot, _ = self._redis.hmget(self.key(tenant_id, vendor), *_PACING_FIELDS)
        return PaceState(float(rate or 0), int(hold or 0), int(slot or 0))

    # -- internals -----------------------------------------------------------------------------

    def _held_back(self, tenant_id: int, vendor: str, wait_ms: int) -> VendorPacedError:
        return VendorPacedError(
            f"{vendor}: calls for tenant {tenant_id} are paced after a 429; "
            f"next slot in {wait_ms / 1000:.2f}s",
            vendor=vendor,
            retry_after_s=wait_ms / 1000,
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _watch(self, tenant_id: int, vendor: str, hold_s: float) -> None:
        """Remember, in this process, a pair seen throttled: where no breaker read brings
        its pacing fields, this process asks Redis for them until the pair is quiet."""
        now = self._monotonic()
        if len(self._watched) >= _MAX_WATCHED:
            self._watched = {pair: t for pair, t in self._watched.items() if t > now}
        self._watched[(tenant_id, vendor)] = now + hold_s + self._quiet_ms / 1000

    def _watching(self, tenant_id: int, vendor: str) -> bool:
        until = self._watched.get((tenant_id, vendor))
        return until is not None and self._monotonic() < until

    def _redis_up(self) -> bool:
        return self._monotonic() >= self._down_until

    def _mark_down(self, operation: str, exc: Exception) -> None:
        self._down_until = self._monotonic() + _REDIS_DOWN_BACKOFF_S
        log.warning(
            "pacing.redis_unavailable",
            operation=operation,
            error=type(exc).__name__,
            behaviour=f"calls go unpaced; Redis asked again in {_REDIS_DOWN_BACKOFF_S:.0f}s",
        )
