"""Keys for the web API: made here, stored hashed, checked in constant time.

A key is `pk_` + 12 hex characters (its prefix: not secret, it finds the row and names the
key in listings) + `_` + 256 random bits. Only its SHA-256 is stored, so the table — a
backup, a leaked dump — holds nothing that opens the API; the key is shown once, when made.
A tenant key acts for one tenant; an admin key for all of them. A revoked key stays in the
table (who had access, and until when) but opens nothing.

A key that authenticated is remembered in this process for `API_KEY_CACHE_S` (`KeyCache`,
by its SHA-256, never the key), so the API keeps answering the keys it saw recently while
Postgres is down — `/health/dependencies` above all, which must be able to say so. The
price: a revocation takes effect within `API_KEY_CACHE_S`, not at once. A key not seen
recently, while Postgres is unreachable, is `DependencyUnavailableError` (503), never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy.exc
from sqlalchemy import select, update

from pipeline.db.engine import session_scope
from pipeline.db.models import ApiKey, utcnow
from pipeline.errors import DATABASE_ERRORS, DependencyUnavailableError, InputError, NotFoundError
from pipeline.settings import get_settings

KEY_TAG = "pk_"
PREFIX_LENGTH = len(KEY_TAG) + 12
# Postgres unreachable (or its pool exhausted): the answer is 503, not a 500.
_DATABASE_DOWN: tuple[type[Exception], ...] = (*DATABASE_ERRORS, sqlalchemy.exc.TimeoutError)


@dataclass(frozen=True)
class ApiKeySummary:
    """What may be shown about a key: never the key, never its hash."""

    id: int
    prefix: str
    tenant_id: int | None
    is_admin: bool
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def scope(self) -> str:
        return "admin" if self.is_admin else f"tenant {self.tenant_id}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _summary(row: ApiKey) -> ApiKeySummary:
    return ApiKeySummary(
        id=row.id,
        prefix=row.prefix,
        tenant_id=row.tenant_id,
        is_admin=row.is_admin,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_api_key(
    *, tenant_id: int | None = None, admin: bool = False, name: str = ""
) -> tuple[str, ApiKeySummary]:
    """Make a key for one tenant (or, with `admin=True`, for all); returns the key — the
    only time it exists outside the caller — and its summary."""
    if admin == (tenant_id is not None):
        raise InputError("a key is either for one tenant (--tenant T) or an admin key (--admin)")
    if tenant_id is not None and not 0 < tenant_id <= 2**63 - 1:
        raise InputError(f"tenant must be a positive integer, got {tenant_id!r}")
    if len(name) > 200:
        raise InputError("name: at most 200 characters")
    prefix = KEY_TAG + secrets.token_hex(6)
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        prefix=prefix, key_hash=_digest(key), tenant_id=tenant_id, is_admin=admin, name=name
    )
    with session_scope() as session:
        session.add(row)
        session.flush()
        return key, _summary(row)


# How long a remembered key still opens the API while Postgres cannot be asked: long
# enough for an outage, not forever (a key revoked meanwhile works until then).
STALE_MAX_S = 24 * 3600.0


class KeyCache:
    """Successful authentications, remembered for `ttl_s` (default: `API_KEY_CACHE_S`, read
    at each use; 0 remembers nothing) by the key's SHA-256 — never the key itself.

    Bounded: past `max_keys` the least recently used is forgotten (it is asked of Postgres
    again next time). Only successes are kept: an unknown or revoked key always asks
    Postgres. `clock` (monotonic seconds) lets a test move time. Thread-safe: the API runs
    its dependencies in a thread pool.
    """

    def __init__(
        self,
        *,
        ttl_s: float | None = None,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._mutex = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, ApiKeySummary]] = OrderedDict()

    @property
    def ttl_s(self) -> float:
        return get_settings().api_key_cache_s if self._ttl_s is None else self._ttl_s

    def get(self, digest: str, *, stale_ok: bool = False) -> ApiKeySummary | None:
        """The remembered key, if checked within the TTL — or, with `stale_ok` (Postgres is
        unreachable, so nothing newer can be known), within `STALE_MAX_S`."""
        with self._mutex:
            found = self._seen.get(digest)
            if found is None:
                return None
            age = self._clock() - found[0]
            if age >= STALE_MAX_S:
                del self._seen[digest]
                return None
            if age >= self.ttl_s and not stale_ok:
                return None
            self._seen.move_to_end(digest)
            return found[1]

    def put(self, digest: str, summary: ApiKeySummary) -> None:
        if self.ttl_s <= 0:
            return
        with self._mutex:
            self._seen[digest] = (self._clock(), summary)
            self._seen.move_to_end(digest)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def authenticate(presented: str | None, *, cache: KeyCache | None = None) -> ApiKeySummary | None:
    """The live key `presented` is, or None. The row is found by the key's prefix; the hash
    is then compared in constant time, so response times say nothing about a guess.

    With `cache`, a key that authenticated within its TTL is answered from it, without
    Postgres (see the module's docstring); while Postgres is unreachable, one remembered for
    longer still is (up to `STALE_MAX_S`). Postgres unreachable for a key not in the cache:
    `DependencyUnavailableError`.
    """
    if not presented or not presented.startswith(KEY_TAG) or len(presented) > 200:
        return None
    digest = _digest(presented)
    if cache is not None and (remembered := cache.get(digest)) is not None:
        return remembered
    try:
        with session_scope() as session:
            rows = session.scalars(
                select(ApiKey).where(
                    ApiKey.prefix == presented[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None)
                )
            ).all()
    except _DATABASE_DOWN as exc:
        stale = cache.get(digest, stale_ok=True) if cache is not None else None
        if stale is not None:  # the best answer there is while Postgres cannot be asked
            return stale
        raise DependencyUnavailableError(
            f"the database is unreachable ({type(exc).__name__}) and this API key was not "
            "used recently, so it cannot be checked; try again shortly"
        ) from None
    matches = [row for row in rows if hmac.compare_digest(row.key_hash, digest)]
    if not matches:
        return None
    summary = _summary(matches[0])
    if cache is not None:
        cache.put(digest, summary)
    return summary


def list_api_keys(tenant_id: int | None = None) -> list[ApiKeySummary]:
    with session_scope() as session:
        query = select(ApiKey).order_by(ApiKey.id)
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return [_summary(row) for row in session.scalars(query)]


def revoke_api_key(key_id: int) -> ApiKeySummary:
    """Revoke a key: its next request gets 401 once the API processes' `KeyCache` forgets
    it (within `API_KEY_CACHE_S`). Revoking twice keeps the first time."""
    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFoundError(f"no API key {key_id}")
        return _summary(row)
