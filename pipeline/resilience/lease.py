"""A lease: one holder at a time across every worker, held with a short TTL a heartbeat renews.

Why short and renewed rather than one long TTL: a lease must outlive the work it guards,
but a holder that is killed (SIGKILL, OOM, the host gone) never releases it. With a TTL as
long as the longest task (`TASK_TIME_LIMIT_S`, 300 s) a dead holder blocks the next one for
minutes. Here the key lives `LEASE_TTL_S` (15 s) and a daemon thread of the holder renews it
every TTL/3, token-checked (redis-py's `Lock.reacquire`, a compare-and-pexpire script), so
it only ever renews its own. A dead holder's heartbeat dies with it: its lease frees itself
within one TTL.

Losing it. The holder must know when it can no longer vouch for the lease, and stop:

- a renewal finds the token gone (the key expired through a long pause of this process,
  Redis restarted empty, someone deleted it): lost at once;
- renewals fail (Redis unreachable): the lease is trusted until `TTL` after the last
  successful renewal was *sent* — the earliest moment the key can have expired on the
  server — and counts as lost from then on, even if Redis comes back.

`lost` says so, `check()` raises `LeaseLostError`; the holder calls it before each step it
must never take while another holder may be taking it too. What a lease cannot do: stop a
step already under way when it lapses (the ERP knows no fencing tokens). While Redis answers,
the heartbeat keeps renewing during a slow step, so that takes a process paused, or cut off
from Redis, for a whole TTL.

Acquiring is the caller's decision when Redis is unreachable: `Lease.acquire` raises the
`redis.RedisError` (see `tasks.export.tenant_lease`, which goes on unleased).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import redis
import structlog
from redis.exceptions import LockError, LockNotOwnedError

from pipeline.errors import LeaseLostError

log = structlog.get_logger(__name__)


class Lease:
    """One named lease on `client`: `acquire` (never blocks), `renew`, `release`, `lost`.

    `clock` (monotonic seconds) dates renewals, so a test can move time past the TTL.
    Renewing is safe from another thread than the one that acquired (the lock's token is
    not thread-local).
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lease's TTL must be positive, got {ttl_s}")
        self.name = name
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = client.lock(name, timeout=ttl_s, blocking=False, thread_local=False)
        self._mutex = threading.Lock()
        self._held = False
        self._valid_until = 0.0
        self._lost_because: str | None = None

    def acquire(self) -> bool:
        """Take the lease if it is free; False if someone holds it. Raises `redis.RedisError`
        when Redis cannot be reached (the caller decides what that means)."""
        sent = self._clock()
        if not self._lock.acquire():
            return False
        with self._mutex:
            self._held, self._valid_until, self._lost_because = True, sent + self.ttl_s, None
        return True

    def renew(self) -> bool:
        """Reset the TTL if the lease is still ours; True if it was renewed. A renewal Redis
        does not answer is not yet a loss (see the module's docstring): `lost` says when."""
        if not self._held or self.lost:
            return False
        sent = self._clock()
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            self._lose("its token is gone: the key expired or was replaced")
            return False
        except redis.RedisError as exc:
            log.warning("lease.renewal_failed", lease=self.name, error=type(exc).__name__)
            return False
        with self._mutex:
            self._valid_until = max(self._valid_until, sent + self.ttl_s)
        return True

    @property
    def lost(self) -> bool:
        """The lease was held and can no longer be vouched for."""
        with self._mutex:
            lapsed = self._held and self._clock() >= self._valid_until
        if lapsed:
            self._lose("not renewed within its TTL (Redis unreachable, or this process stalled)")
        return self._lost_because is not None

    def check(self) -> None:
        """Raise `LeaseLostError` (naming the lease and why) if the lease was lost."""
        if self.lost:
            raise LeaseLostError(
                f"lease {self.name} lost: {self._lost_because}",
                details={"lease": self.name, "reason": self._lost_because},
            )

    def release(self) -> None:
        """Give the lease back if it is still ours (token-checked); never raises: a lease
        that cannot be released expires within its TTL."""
        if not self._held:
            return
        self._held = False
        with suppress(redis.RedisError, LockError):
            self._lock.release()

    def _lose(self, why: str) -> None:
        with self._mutex:
            if self._lost_because is not None:
                return
            self._lost_because = why
        log.warning("lease.lost", lease=self.name, reason=why)


class Heartbeat:
    """A daemon thread renewing `lease` every `every_s` until stopped or the lease is lost."""

    def __init__(self, lease: Lease, every_s: float) -> None:
        self._lease = lease
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-heartbeat:{lease.name}", daemon=True
        )

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._every_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            if not self._lease.renew() and self._lease.lost:
                return


@contextmanager
def renewed(lease: Lease) -> Iterator[Lease]:
    """While the block runs, a heartbeat renews the (acquired) `lease` every third of its
    TTL; at the end the heartbeat stops and the lease is released."""
    heartbeat = Heartbeat(lease, lease.ttl_s / 3).start()
    try:
        yield lease
    finally:
        heartbeat.stop()
        lease.release()
