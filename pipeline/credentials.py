"""The credential store: each tenant's credentials for its vendors, encrypted at rest.

A secret is a JSON object of named string fields (`{"client_id": ..., "client_secret": ...}`
for the CRM, `{"url": ..., "db": ..., "login": ..., "password": ...}` for the ERP), kept in
the `credentials` table as a Fernet token. The keys come from `PIPELINE_SECRET_KEY`:
comma-separated, newest first. The first key encrypts every write and any key decrypts, so
a new key goes in front while rows written under the old one stay readable;
`rotate_credentials` then re-encrypts every row under the new key, after which the old one
can be dropped.

Values leave this module only through `get_credential`, for the job that is about to use
them, wrapped in a `Credential` whose repr shows field names alone; `list_credentials` gives
names and status, never values. Jobs carry (tenant, vendor) and fetch the credential where
they call the vendor, so secrets stay out of task arguments, results and logs. Errors name
the tenant, the vendor and fields, never a value or a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select, update

from pipeline.db.engine import session_scope
from pipeline.db.models import Credential as CredentialRow
from pipeline.db.models import CredentialStatus, utcnow
from pipeline.db.upsert import insert_for
from pipeline.errors import InputError, SettingsError
from pipeline.settings import get_settings

KEY_VARIABLE = "PIPELINE_SECRET_KEY"
MAKE_A_KEY = (
    "make one with: python -c "
    '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)
MAX_REASON_LENGTH = 500

_VENDOR = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class SecretFields(Mapping[str, str]):
    """A credential's decrypted fields, read-only, whose repr shows names only — so even
    `repr(credential.secret)` in a log line or a traceback's locals reveals nothing."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields = dict(fields)

    def __getitem__(self, name: str) -> str:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: '***'" for name in self._fields) + "}"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class Credential:
    """A decrypted credential, for the one call that needs it.

    Its repr (and str) masks every value, so a log line, a traceback's locals or an error
    that shows it reveals field names only. `secret` is read-only.
    """

    id: int
    tenant_id: int
    vendor: str
    secret: Mapping[str, str]
    status: str
    attention_reason: str | None
    attention_at: datetime | None
    updated_at: datetime

    @property
    def needs_attention(self) -> bool:
        return self.status == CredentialStatus.NEEDS_ATTENTION

    def __repr__(self) -> str:
        masked = ", ".join(f"{name!r}: '***'" for name in self.secret)
        return (
            f"Credential(id={self.id}, tenant_id={self.tenant_id}, vendor={self.vendor!r}, "
            f"secret={{{masked}}}, status={self.status!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class CredentialSummary:
    """What may be shown about a credential: field names and status, never values.

    `fields` is None when no key in PIPELINE_SECRET_KEY decrypts the row (the key it was
    written with has been removed before a rotation).
    """

    id: int
    tenant_id: int
    vendor: str
    fields: tuple[str, ...] | None
    status: str
    attention_reason: str | None
    attention_at: datetime | None
    updated_at: datetime


class CredentialCipher:
    """Fernet under the keys of PIPELINE_SECRET_KEY: the first key encrypts, any decrypts.

    Raises `SettingsError` naming PIPELINE_SECRET_KEY, and never showing a key, when the
    keys are missing or malformed or when no key decrypts a token.
    """

    def __init__(self, keys: str | None) -> None:
        self._fernet = MultiFernet(_fernets(keys))

    @classmethod
    def from_settings(cls) -> CredentialCipher:
        key = get_settings().pipeline_secret_key
        return cls(key.get_secret_value() if key is not None else None)

    def encrypt(self, secret: Mapping[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(dict(secret)).encode()).decode()

    def decrypt(self, token: str, *, what: str = "a credential") -> dict[str, str]:
        try:
            plain = self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise _undecryptable(what) from None
        secret: dict[str, str] = json.loads(plain)
        return secret

    def rotate(self, token: str, *, what: str = "a credential") -> str:
        """The same secret encrypted under the first key (its timestamp is kept)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise _undecryptable(what) from None


def _fernets(keys: str | None) -> list[Fernet]:
    if keys is None or not keys.strip():
        raise SettingsError(
            f"{KEY_VARIABLE} is not set: credentials are stored encrypted with it "
            f"(comma-separated Fernet keys, newest first; {MAKE_A_KEY})"
        )
    parts = [part.strip() for part in keys.split(",")]
    fernets = []
    for position, part in enumerate(parts, start=1):
        where = f"key {position} of {len(parts)}"
        if not part:
            raise SettingsError(f"{KEY_VARIABLE}: {where} is empty")
        try:
            fernets.append(Fernet(part))
        except ValueError:
            raise SettingsError(
                f"{KEY_VARIABLE}: {where} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes; {MAKE_A_KEY})"
            ) from None
    return fernets


def _undecryptable(what: str) -> SettingsError:
    return SettingsError(
        f"{what} cannot be decrypted with any key in {KEY_VARIABLE} "
        "(was the key it was written with removed before `pipeline credentials rotate`?)"
    )


def _checked_owner(tenant_id: int, vendor: str) -> str:
    """The vendor name, once (tenant, vendor) is known to be well-formed."""
    if isinstance(tenant_id, bool) or not isinstance(tenant_id, int) or tenant_id <= 0:
        raise InputError(f"tenant must be a positive integer, got {tenant_id!r}")
    if not isinstance(vendor, str) or not _VENDOR.fullmatch(vendor):
        raise InputError(f"vendor must be a lower-case name such as 'crm' or 'erp', got {vendor!r}")
    return vendor


def _checked_secret(secret: Mapping[str, str]) -> dict[str, str]:
    """A copy of `secret` once every field is a named, non-empty string.

    Messages name the offending field, never a value.
    """
    if not isinstance(secret, Mapping) or not secret:
        raise InputError("a credential needs at least one field, e.g. client_secret=...")
    checked: dict[str, str] = {}
    for name, value in secret.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise InputError(
                f"field name {name!r} is not a name (letters, digits, _ . -; at most 64)"
            )
        if not isinstance(value, str):
            raise InputError(f"field {name!r} must be a string, got {type(value).__name__}")
        if not value:
            raise InputError(f"field {name!r} is empty")
        checked[name] = value
    return checked


def _describe(tenant_id: int, vendor: str) -> str:
    return f"the credential for tenant {tenant_id}, vendor {vendor!r}"


def _missing(tenant_id: int, vendor: str) -> InputError:
    return InputError(
        f"no credential for tenant {tenant_id}, vendor {vendor!r} "
        "(store one with `pipeline credentials set`)"
    )


def put_credential(tenant_id: int, vendor: str, secret: Mapping[str, str]) -> int:
    """Store `secret` as the tenant's credential for `vendor`, replacing any; returns its id.

    Every put makes the credential active again: a credential marked `needs_attention`
    stops jobs until someone stores it anew, and storing it is that signal (even with the
    same values, e.g. after the vendor unlocked the account). Safe to repeat.
    """
    vendor = _checked_owner(tenant_id, vendor)
    checked = _checked_secret(secret)
    token = CredentialCipher.from_settings().encrypt(checked)
    now = utcnow()
    fresh = {
        "encrypted_secret": token,
        "status": CredentialStatus.ACTIVE.value,
        "attention_reason": None,
        "attention_at": None,
        "updated_at": now,
    }
    with session_scope() as session:
        stmt = (
            insert_for(session, CredentialRow)
            .values(tenant_id=tenant_id, vendor=vendor, created_at=now, **fresh)
            .on_conflict_do_update(index_elements=["tenant_id", "vendor"], set_=fresh)
            .returning(CredentialRow.id)
        )
        return int(session.execute(stmt).scalar_one())


def get_credential(tenant_id: int, vendor: str) -> Credential:
    """The tenant's decrypted credential for `vendor`, whatever its status.

    Raises `InputError` if there is none, `SettingsError` if PIPELINE_SECRET_KEY cannot
    decrypt it. Callers check `needs_attention` before using it.
    """
    vendor = _checked_owner(tenant_id, vendor)
    with session_scope() as session:
        row = session.scalars(
            select(CredentialRow).where(
                CredentialRow.tenant_id == tenant_id, CredentialRow.vendor == vendor
            )
        ).one_or_none()
    if row is None:
        raise _missing(tenant_id, vendor)
    secret = CredentialCipher.from_settings().decrypt(
        row.encrypted_secret, what=_describe(tenant_id, vendor)
    )
    return Credential(
        id=row.id,
        tenant_id=row.tenant_id,
        vendor=row.vendor,
        secret=SecretFields(secret),
        status=row.status,
        attention_reason=row.attention_reason,
        attention_at=row.attention_at,
        updated_at=row.updated_at,
    )


def list_credentials(tenant_id: int | None = None) -> list[CredentialSummary]:
    """Every credential (or one tenant's), by tenant and vendor: field names, never values."""
    cipher = CredentialCipher.from_settings()
    query = select(CredentialRow).order_by(CredentialRow.tenant_id, CredentialRow.vendor)
    if tenant_id is not None:
        query = query.where(CredentialRow.tenant_id == tenant_id)
    with session_scope() as session:
        rows = list(session.scalars(query))
    summaries = []
    for row in rows:
        try:
            fields: tuple[str, ...] | None = tuple(cipher.decrypt(row.encrypted_secret))
        except SettingsError:
            fields = None
        summaries.append(
            CredentialSummary(
                id=row.id,
                tenant_id=row.tenant_id,
                vendor=row.vendor,
                fields=fields,
                status=row.status,
                attention_reason=row.attention_reason,
                attention_at=row.attention_at,
                updated_at=row.updated_at,
            )
        )
    return summaries


def delete_credential(tenant_id: int, vendor: str) -> None:
    """Forget the tenant's credential for `vendor`; `InputError` if there is none."""
    vendor = _checked_owner(tenant_id, vendor)
    with session_scope() as session:
        deleted = session.execute(
            delete(CredentialRow).where(
                CredentialRow.tenant_id == tenant_id, CredentialRow.vendor == vendor
            )
        )
        if deleted.rowcount == 0:  # type: ignore[attr-defined]
            raise _missing(tenant_id, vendor)


def mark_needs_attention(
    tenant_id: int, vendor: str, reason: str, *, refused: datetime | None = None
) -> bool:
    """Stop jobs using this credential until someone stores it again (`put_credential`).

    Returns True if this call marked it, False if it was already marked: the first
    reason and time are kept, so workers that meet the same refusal at once may all call
    this safely. `refused` is the `updated_at` of the credential that was refused: if an
    operator has stored a new one since, it is not marked (compare-and-set) and False is
    returned. `reason` is shown to operators: it must not hold a secret (codes and
    vendor status lines, not response bodies). `InputError` if there is no credential.
    """
    vendor = _checked_owner(tenant_id, vendor)
    reason = reason.strip()[:MAX_REASON_LENGTH] or "unspecified"
    with session_scope() as session:
        marked = session.execute(
            update(CredentialRow)
            .where(
                CredentialRow.tenant_id == tenant_id,
                CredentialRow.vendor == vendor,
                CredentialRow.status == CredentialStatus.ACTIVE.value,
                *([] if refused is None else [CredentialRow.updated_at == refused]),
            )
            .values(
                status=CredentialStatus.NEEDS_ATTENTION.value,
                attention_reason=reason,
                attention_at=utcnow(),
            )
        )
        if marked.rowcount:  # type: ignore[attr-defined]
            return True
        exists = session.scalar(
            select(CredentialRow.id).where(
                CredentialRow.tenant_id == tenant_id, CredentialRow.vendor == vendor
            )
        )
    if exists is None:
        raise _missing(tenant_id, vendor)
    return False


def rotate_credentials() -> int:
    """Re-encrypt every credential under the first key of PIPELINE_SECRET_KEY; returns how
    many rows were rewritten.

    All or nothing, in one transaction with the rows locked: if any row cannot be
    decrypted (`SettingsError`, naming it), none is changed. Safe to repeat; afterwards
    the older keys may be removed. Values and `updated_at` are unchanged.
    """
    cipher = CredentialCipher.from_settings()
    with session_scope() as session:
        rows = session.execute(
            select(
                CredentialRow.id,
                CredentialRow.tenant_id,
                CredentialRow.vendor,
                CredentialRow.encrypted_secret,
            )
            .order_by(CredentialRow.id)
            .with_for_update()
        ).all()
        for row in rows:
            token = cipher.rotate(row.encrypted_secret, what=_describe(row.tenant_id, row.vendor))
            session.execute(
                update(CredentialRow)
                .where(CredentialRow.id == row.id)
                .values(encrypted_secret=token, updated_at=CredentialRow.updated_at)
            )
    return len(rows)
