"""The few Redis commands and Lua scripts this product uses, in one process's memory.

For the embedded mode only (`REDIS_URL=memory://`: `pipeline demo` with nothing installed),
where one process holds every worker thread, so "shared by all workers" means shared by
this process. `redis_for("memory://")` returns one of these; the code that keeps CRM tokens
(`pipeline.crm_tokens`), the per-tenant rate (`pipeline.resilience.rate_limit`) and the
export lease (`tasks.export`) runs unchanged on it.

Each Lua script we run has a Python twin below with the same keys, arguments and answer;
a script without one fails loudly (`NotImplementedError` naming it) rather than pretend.
Breakers do not come here: they have their own memory storage, held to the same
behaviour suite as Redis's (`pipeline.breakers.memory`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError

_LUA = Path(__file__).parent / "resilience" / "lua"


class MemoryRedis:
    """GET, SET (NX, PX), DEL, a lock and registered scripts, all under one thread lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mutex = threading.RLock()
        self._values: dict[str, tuple[Any, float | None]] = {}  # key -> (value, expires at)
        self._twins: dict[str, Callable[[list[str], list[Any]], Any]] = {
            _source("crm_token_fetch_or_lock"): self._fetch_or_lock,
            _source("crm_token_store"): self._store_token,
            _source("crm_token_compare_and_delete"): self._compare_and_delete,
            _source("token_bucket"): self._token_bucket,
        }

    # -- commands ------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        with self._mutex:
            value, expires = self._values.get(key, (None, None))
            if expires is not None and expires <= self._clock():
                del self._values[key]
                return None
            return value

    def set(self, key: str, value: Any, *, nx: bool = False, px: int | None = None) -> bool:
        with self._mutex:
            if nx and self.get(key) is not None:
                return False
            expires = self._clock() + px / 1000 if px else None
            self._values[key] = (value, expires)
            return True

    def delete(self, *keys: str) -> int:
        with self._mutex:
            return sum(1 for key in keys if self._values.pop(key, None) is not None)

    def register_script(self, source: str) -> Callable[..., Any]:
        twin = self._twins.get(source)
        if twin is None:
            first = source.strip().splitlines()[0] if source.strip() else "?"
            raise NotImplementedError(f"no in-memory twin for the Lua script {first!r}")

        def run(keys: list[str], args: list[Any]) -> Any:
            with self._mutex:
                return twin(list(keys), list(args))

        return run

    def lock(
        self, name: str, *, timeout: float, blocking: bool = False, thread_local: bool = True
    ) -> MemoryLock:
        return MemoryLock(self, name, timeout)  # one token per lock, whatever the thread

    # -- the scripts' twins (see each .lua file for the contract) ------------------------------

    def _fetch_or_lock(self, keys: list[str], args: list[Any]) -> list[Any]:
        token_key, lock_key, flag_key = keys
        owner, lock_ttl_ms = args
        flagged = self.get(flag_key)
        if flagged is not None:
            return [3, flagged]
        token = self.get(token_key)
        if token is not None:
            return [1, token]
        if self.set(lock_key, owner, nx=True, px=int(lock_ttl_ms)):
            return [2]
        return [0]

    def _store_token(self, keys: list[str], args: list[Any]) -> int:
        token_key, lock_key = keys
        owner, token, ttl_ms = args
        if int(ttl_ms) > 0:
            self.set(token_key, token, px=int(ttl_ms))
        if self.get(lock_key) == owner:
            self.delete(lock_key)
            return 1
        return 0

    def _compare_and_delete(self, keys: list[str], args: list[Any]) -> int:
        if self.get(keys[0]) == args[0]:
            return self.delete(keys[0])
        return 0

    def _token_bucket(self, keys: list[str], args: list[Any]) -> int:
        rate, burst, n = float(args[0]), float(args[1]), float(args[2])
        now_ms = self._clock() * 1000
        tokens, at = self.get(keys[0]) or (burst, now_ms)
        tokens = min(burst, tokens + max(0.0, now_ms - at) * rate / 1000)
        wait = 0
        if tokens >= n:
            tokens -= n
        else:
            wait = int(-(-(n - tokens) * 1000 // rate))  # ceil
        self.set(keys[0], (tokens, now_ms), px=int(burst * 1000 / rate) + 1000)
        return wait


class MemoryLock:
    """redis-py's `Lock`, as far as we use it: acquire without blocking, reacquire (reset
    the expiry) and release if owned, expiry after `timeout` seconds."""

    def __init__(self, store: MemoryRedis, name: str, timeout: float) -> None:
        self._store, self._name, self._timeout = store, name, timeout
        self._token = uuid.uuid4().hex

    def acquire(self) -> bool:
        return self._store.set(self._name, self._token, nx=True, px=int(self._timeout * 1000))

    def reacquire(self) -> bool:
        with self._store._mutex:
            if self._store.get(self._name) != self._token:
                raise LockNotOwnedError("cannot reacquire a lock that is no longer owned")
            return self._store.set(self._name, self._token, px=int(self._timeout * 1000))

    def release(self) -> None:
        with self._store._mutex:
            if self._store.get(self._name) != self._token:
                raise LockError("cannot release a lock that is no longer owned")
            self._store.delete(self._name)


def _source(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()
