"""Breaker state in Redis: one Lua script per transition, one round trip per operation.

Why not `pybreaker.CircuitRedisStorage`: it reads and writes state with separate GET/SET
calls, so concurrent workers race (several see "open → half-open" and all probe the failing
vendor), and it spends a GET and a SET on every successful call. Here each decision —
admit a call, count a failure, count a success, force a state — is one atomic script, and a
successful call in a healthy closed breaker costs only the admit, a plain HMGET.

Keys are hash-tagged (`{tenant:vendor}`) so a breaker's hash and its probe leases live in
one Redis Cluster slot. Probe slots are leases that expire, so a worker that dies holding
one cannot wedge the breaker half-open forever.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
import structlog
from redis.commands.core import Script

from pipeline.breakers.contract import (
    CLOSED,
    DEGRADED,
    NO_CHANGE,
    NOT_PACED,
    OPEN,
    BreakerStorage,
    Outcome,
    PaceFields,
    Ticket,
    Verdict,
)
from pipeline.settings import BreakerConfig

log = structlog.get_logger(__name__)

_LUA_DIR = Path(__file__).parent / "lua"

# Per Redis client (so per process): until when to stop asking a Redis that just failed.
_down_until: weakref.WeakKeyDictionary[redis.Redis, float] = weakref.WeakKeyDictionary()


class RedisBreakerStorage(BreakerStorage):
    """One (tenant, vendor) breaker's state in Redis.

    Redis errors never escape: the breaker then behaves as closed and says so in the log.
    After an error this process stops asking Redis for `outage_backoff_s`, so a Redis that
    hangs costs one socket timeout per interval, not one per vendor call (and the log gets
    one line per interval, not a flood).
    """

    outage_backoff_s = 5.0

    def __init__(self, client: redis.Redis, *, prefix: str, tenant_id: int, vendor: str) -> None:
        super().__init__("redis-atomic")
        self._redis = client
        self.key = breaker_key(prefix, tenant_id, vendor)
        self.probes_key = f"{self.key}:probes"
        self._keys = [self.key, self.probes_key]
        # the breaker's fields, and the pair's pacing fields (pipeline.resilience.pacing)
        self._admit_read = ("HMGET", self.key, "s", "f", "at", "g", "pr", "pu")
        self._scripts = _scripts_for(client)

    # -- the atomic operations -------------------------------------------------------------

    def admit(self, config: BreakerConfig, now: float) -> Ticket:
        """Decide whether one call may go to the vendor.

        The common answers — closed, or open and still cooling off — need no write, so they
        come from one plain HMGET (atomic on its own). Only when a write may be due (the
        open → half-open move, taking a probe lease) does the admit script run. The same
        read brings the pair's pacing fields, so pacing costs a healthy call nothing.
        """
        if not self._available():
            return DEGRADED
        try:
            state, failures, opened_at, gen, rate, hold = self._redis.execute_command(
                *self._admit_read
            )
        except redis.RedisError as exc:
            self._mark_down("admit", exc)
            return DEGRADED
        state = _text(state) or CLOSED
        if state == CLOSED:
            pace = NOT_PACED if rate is None else PaceFields(float(rate), int(hold or 0))
            return Ticket(Verdict.CALL, int(gen or 0), failures=int(failures or 0), pace=pace)
        now_ms = _ms(now)
        if state == OPEN:
            reopen_at = int(opened_at or 0) + _ms(config.cool_off_s)
            if now_ms < reopen_at:
                retry_in_s = (reopen_at - now_ms) / 1000.0
                return Ticket(Verdict.REJECT, int(gen or 0), retry_in_s=retry_in_s)
        return self._admit_by_script(config, now_ms)

    def _admit_by_script(self, config: BreakerConfig, now_ms: int) -> Ticket:
        probe_id = uuid.uuid4().hex
        try:
            verdict, gen, n, moved_from = self._scripts["admit"](
                keys=self._keys,
                args=[
                    now_ms,
                    _ms(config.cool_off_s),
                    config.half_open_max_calls,
                    _ms(config.probe_lease_s),
                    probe_id,
                ],
            )
        except redis.RedisError as exc:
            self._mark_down("admit", exc)
            return DEGRADED
        verdict = Verdict(int(verdict))
        return Ticket(
            verdict=verdict,
            generation=int(gen),
            failures=int(n) if verdict == Verdict.CALL else 0,
            retry_in_s=int(n) / 1000.0 if verdict == Verdict.REJECT else 0.0,
            probe_id=probe_id if verdict == Verdict.PROBE else "",
            moved_from=_text(moved_from),
        )

    def record_failure(self, ticket: Ticket, config: BreakerConfig, now: float) -> Outcome:
        if ticket.degraded:
            return NO_CHANGE
        args = [_ms(now), ticket.generation, config.error_threshold, int(config.exempt)]
        return self._run("record_failure", [*args, ticket.probe_id])

    def record_success(self, ticket: Ticket, config: BreakerConfig) -> Outcome:
        if ticket.degraded or (ticket.verdict == Verdict.CALL and ticket.failures == 0):
            return NO_CHANGE  # the healthy fast path: nothing to write
        return self._run(
            "record_success", [ticket.generation, config.success_threshold, ticket.probe_id]
        )

    def release(self, ticket: Ticket) -> None:
        if ticket.probe_id and not ticket.degraded:
            try:
                self._redis.zrem(self.probes_key, ticket.probe_id)
            except redis.RedisError as exc:  # the lease expires by itself
                self._mark_down("release", exc)

    def force(self, state: str, now: float) -> str:
        """Raises on Redis errors: an operator must know their reset did not happen."""
        return _text(self._scripts["force_state"](keys=self._keys, args=[state, _ms(now)]))

    # -- pybreaker's storage contract (reads for introspection) -----------------------------

    def _field(self, name: str) -> bytes | None:
        if not self._available():
            return None
        try:
            return self._redis.hget(self.key, name)  # type: ignore[return-value]
        except redis.RedisError as exc:
            self._mark_down("read", exc)
            return None

    @property
    def state(self) -> str:
        value = self._field("s")
        return _text(value) if value else CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self.force(state, time.time())

    @property
    def counter(self) -> int:
        return int(self._field("f") or 0)

    @property
    def success_counter(self) -> int:
        return int(self._field("ok") or 0)

    @property
    def opened_at(self) -> datetime | None:
        value = self._field("at")
        return datetime.fromtimestamp(int(value) / 1000.0, UTC) if value else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        raise NotImplementedError("use force(): state and time are set in one script")

    # -- internals ---------------------------------------------------------------------------

    def _run(self, script: str, args: list[str | int]) -> Outcome:
        try:
            state, moved_from = self._scripts[script](keys=self._keys, args=args)
        except redis.RedisError as exc:
            self._mark_down(script, exc)
            return NO_CHANGE
        return Outcome(_text(state), _text(moved_from))

    def _available(self) -> bool:
        return time.monotonic() >= _down_until.get(self._redis, 0.0)

    def _mark_down(self, operation: str, exc: Exception) -> None:
        _down_until[self._redis] = time.monotonic() + self.outage_backoff_s
        log.warning(
            "breaker.redis_unavailable",
            operation=operation,
            key=self.key,
            error=type(exc).__name__,
            behaviour=f"calls go through as if closed; Redis asked again in "
            f"{self.outage_backoff_s:.0f}s",
        )


# -- the layout, for read-only inspection (operators, the API) ---------------------------------


def breaker_key(prefix: str, tenant_id: int, vendor: str) -> str:
    """`PREFIX:cb:{TENANT:VENDOR}` — hash-tagged, so the hash and its probe leases share a
    Redis Cluster slot."""
    return f"{prefix}:cb:{{{tenant_id}:{vendor}}}"


@dataclass(frozen=True)
class StoredBreaker:
    """One breaker's hash as stored (a breaker never written is closed with no failures)."""

    state: str
    failures: int
    changed_at: datetime | None  # when it was last opened (or forced)


def read_breakers(
    client: redis.Redis, prefix: str, pairs: Sequence[tuple[int, str]]
) -> list[StoredBreaker]:
    """The stored state of each (tenant, vendor), in one round trip. Unlike the call path,
    Redis errors are raised: an operator asking must not be told "closed" by a dead Redis."""
    pipe = client.pipeline(transaction=False)
    for tenant_id, vendor in pairs:
        pipe.hmget(breaker_key(prefix, tenant_id, vendor), "s", "f", "at")
    return [
        StoredBreaker(
            state=_text(state) or CLOSED,
            failures=int(failures or 0),
            changed_at=datetime.fromtimestamp(int(at) / 1000.0, UTC) if at else None,
        )
        for state, failures, at in pipe.execute()
    ]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""


_SCRIPT_CACHE: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = (
    weakref.WeakKeyDictionary()
)


def _scripts_for(client: redis.Redis) -> dict[str, Script]:
    """Register each Lua file once per client (redis-py reloads on NOSCRIPT by itself)."""
    scripts = _SCRIPT_CACHE.get(client)
    if scripts is None:
        scripts = {
            path.stem: client.register_script(path.read_text())
            for path in sorted(_LUA_DIR.glob("*.lua"))
        }
        _SCRIPT_CACHE[client] = scripts
    return scripts
