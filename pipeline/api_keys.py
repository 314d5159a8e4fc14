"""Keys for the web API: made here, stored hashed, checked in constant time.

A key is `pk_` + 12 hex characters (its prefix: not secret, it finds the row and names the
key in listings) + `_` + 256 random bits. Only its SHA-256 is stored, so the table — a
backup, a leaked dump — holds nothing that opens the API; the key is shown once, when made.
A tenant key acts for one tenant; an admin key for all of them. A revoked key stays in the
table (who had access, and until when) but opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from pipeline.db.engine import session_scope
from pipeline.db.models import ApiKey, utcnow
from pipeline.errors import InputError, NotFoundError

KEY_TAG = "pk_"
PREFIX_LENGTH = len(KEY_TAG) + 12


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


def authenticate(presented: str | None) -> ApiKeySummary | None:
    """The live key `presented` is, or None. The row is found by the key's prefix; the hash
    is then compared in constant time, so response times say nothing about a guess."""
    if not presented or not presented.startswith(KEY_TAG) or len(presented) > 200:
        return None
    digest = _digest(presented)
    with session_scope() as session:
        rows = session.scalars(
            select(ApiKey).where(
                ApiKey.prefix == presented[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None)
            )
        ).all()
    matches = [row for row in rows if hmac.compare_digest(row.key_hash, digest)]
    return _summary(matches[0]) if matches else None


def list_api_keys(tenant_id: int | None = None) -> list[ApiKeySummary]:
    with session_scope() as session:
        query = select(ApiKey).order_by(ApiKey.id)
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return [_summary(row) for row in session.scalars(query)]


def revoke_api_key(key_id: int) -> ApiKeySummary:
    """Revoke a key at once (its next request gets 401). Revoking twice keeps the first time."""
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
