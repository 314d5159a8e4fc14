"""The run tables, as SQLAlchemy 2.0 models. The schema itself is made by Alembic.

We use general `runs` / `run_items` tables with a `kind` column rather than the spec's
`enrichment_runs` / `company_enrichment_runs`: CRM sync and ERP export runs have the same
shape (a run of items, each with a status and degradation reasons), and one pair of
tables lets the dead-letter queue, replay and the API treat every job kind alike.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite hands back naive ones (stored as UTC),
    Postgres aware ones."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class RunKind(StrEnum):
    ENRICHMENT = "enrichment"
    CRM_SYNC = "crm_sync"
    EXPORT = "export"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"


class ItemStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    DEAD = "dead"


# The one spelling of "still going" and "closed" for runs and items; nothing else lists them.
OPEN_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
FINISHED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.DEGRADED, RunStatus.FAILED)
OPEN_ITEM_STATUSES = (ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.RUNNING)
FINISHED_ITEM_STATUSES = (
    ItemStatus.SUCCEEDED,
    ItemStatus.DEGRADED,
    ItemStatus.FAILED,
    ItemStatus.DEAD,
)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.PENDING)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    degraded_reasons: Mapped[str] = mapped_column(Text, default="")
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    items_total: Mapped[int] = mapped_column(Integer, default=0)
    items_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    items_degraded: Mapped[int] = mapped_column(Integer, default=0)
    items_failed: Mapped[int] = mapped_column(Integer, default=0)
    items_dead: Mapped[int] = mapped_column(Integer, default=0)
    # The run this one follows in a pipeline (enrichment → CRM sync → export), if any.
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("runs.id", ondelete="SET NULL")
    )
    # The stage before this one in the same pipeline (unique: a stage starts once), and, on
    # that stage, when it handed off (started, skipped or stopped its next stage).
    follows_run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("runs.id", ondelete="SET NULL"), unique=True
    )
    handed_off_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When its task was last put on the broker (None: never — a lost send, for the sweeper).
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How often dead or failed items were reopened for replay (its later closes are
    # re-closes: metrics count a run's outcome once).
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Export only: the tenant's ERP could not take anything, and why.
    export_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    export_disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Items that reached a terminal state: the latch that closes the run at items_total.
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    # The feature flags the run was started with: a run behaves the same from start to end,
    # whatever happens to the workers' settings meanwhile.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Per vendor: calls, errors, p50_ms, p95_ms — written when the run finishes.
    vendor_stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


_OPEN_ITEMS = "status IN ('pending', 'queued', 'running')"
_HEALED_ITEMS = "healed_at IS NOT NULL"


class RunItem(Base):
    __tablename__ = "run_items"
    __table_args__ = (
        UniqueConstraint("run_id", "item_key", name="uq_run_items_run_key"),
        Index(
            "ix_run_items_open_progress",
            "progress_at",
            postgresql_where=text(_OPEN_ITEMS),
            sqlite_where=text(_OPEN_ITEMS),
        ),
        Index(
            "ix_run_items_healed",
            "run_id",
            postgresql_where=text(_HEALED_ITEMS),
            sqlite_where=text(_HEALED_ITEMS),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    item_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING)
    degraded_reasons: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    # The last durable step: the step an open item's work reached (its name) and what that
    # step was given (`checkpoint`: an enrichment step's context), so the reconciler can
    # re-drive it from there; `progress_at` is when it last moved (`pipeline.progress`).
    step: Mapped[str | None] = mapped_column(String(64))
    # (none_as_null: "no checkpoint" is SQL NULL, which queries ask for, not JSON 'null')
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    # How often the reconciler re-drove it (past RECONCILE_MAX_REDRIVES: dead-lettered; a
    # replay or heal starts the count afresh).
    redrives: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Which copy of its work may run: every re-drive, heal and replay sends a new copy and
    # bumps it; a step carrying an older one stops (a fencing token), so an old message
    # that turns up late never runs the rest of the chain a second time.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What happened to it besides its last outcome, oldest first: re-drives, deferrals,
    # heals, replays — each {"at", "event", ...} — so a healed item keeps its old reasons.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    healed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class DeferralStatus(StrEnum):
    WAITING = "waiting"  # for its vendor to be back
    HEALING = "healing"  # its item was sent to redo the missing steps
    HEALED = "healed"
    EXPIRED = "expired"  # past HEAL_WINDOW_S, or HEAL_MAX_ATTEMPTS used up: stays degraded


class Deferral(Base):
    """Work an item could not do because a vendor was passing through trouble (breaker open,
    down past the retry policy): redone when the vendor is back (`pipeline.healing`). One row
    per (item, vendor)."""

    __tablename__ = "deferrals"
    __table_args__ = (
        UniqueConstraint("item_id", "vendor", name="uq_deferrals_item_vendor"),
        Index("ix_deferrals_status_tenant_vendor", "status", "tenant_id", "vendor"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    vendor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("runs.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("run_items.id", ondelete="CASCADE"), index=True
    )
    reason: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=DeferralStatus.WAITING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    healed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReconcilerMark(Base):
    """What the reconciler remembers between passes (it runs in whichever worker takes the
    beat task): the epoch it left in each Redis, when each queue was last seen empty."""

    __tablename__ = "reconciler_marks"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VendorCall(Base):
    """One row per vendor call: calls, errors and latency percentiles are queries over it."""

    __tablename__ = "vendor_calls"
    __table_args__ = (Index("ix_vendor_calls_run_vendor", "run_id", "vendor"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("runs.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    vendor: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    error_code: Mapped[str | None] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BreakerEvent(Base):
    __tablename__ = "breaker_events"
    __table_args__ = (Index("ix_breaker_events_tenant_vendor_at", "tenant_id", "vendor", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    vendor: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Company(Base):
    """A tenant's company, and what enrichment last found about it."""

    __tablename__ = "companies"
    __table_args__ = (UniqueConstraint("tenant_id", "natural_key", name="uq_companies_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # lower-cased domain, or "name:<lower-cased name>" when there is no domain
    natural_key: Mapped[str] = mapped_column(String(300))
    name: Mapped[str | None] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255))
    site_text_length: Mapped[int | None] = mapped_column(Integer)
    search_results: Mapped[int | None] = mapped_column(Integer)
    enriched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("company_id", "email", name="uq_contacts_company_email"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255), default="")
    title: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(320))
    # valid / invalid / catch-all from the verifier; unknown when verification was deferred
    email_status: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    # A vendor refused it for good: jobs stop using it until someone stores a new one.
    NEEDS_ATTENTION = "needs_attention"


class Credential(Base):
    """A tenant's credential for one vendor. Only `pipeline.credentials` reads or writes it:
    `encrypted_secret` is a Fernet token of the secret's JSON, never the secret itself."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("tenant_id", "vendor", name="uq_credentials_tenant_vendor"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    vendor: Mapped[str] = mapped_column(String(64))
    encrypted_secret: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=CredentialStatus.ACTIVE)
    attention_reason: Mapped[str | None] = mapped_column(Text)
    attention_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class DeadLetterStatus(StrEnum):
    DEAD = "dead"
    REPLAYED = "replayed"


class DeadLetter(Base):
    """A task that will not succeed by itself: kept with what is needed to understand and
    replay it (`pipeline.dead_letters`). One row per task id: a poison message that comes
    back counts `failures` up instead of adding rows. Arguments never hold secrets (tasks
    carry tenant, run and item ids only)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("task_id", name="uq_dead_letters_task_id"),
        Index("ix_dead_letters_tenant_status", "tenant_id", "status"),
        Index("ix_dead_letters_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    task_name: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What else the message carried that a replay needs (the rest of a chain).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    item_id: Mapped[int | None] = mapped_column(BigInteger)
    # failure | rejected | time_limit | worker_lost, or a message no task can run:
    # not_an_envelope | undecodable | refused_content | no_task_name | unknown_task |
    # invalid_task | unprocessable (pipeline.dead_letters.UNRUNNABLE)
    path: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    traceback: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    failures: Mapped[int] = mapped_column(Integer, default=1)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeadLetterStatus.DEAD)
    replay_task_id: Mapped[str | None] = mapped_column(String(64))
    first_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """A key for the web API: a tenant key (`tenant_id` set) or an admin key (`is_admin`).

    Only `pipeline.api_keys` reads or writes it. The key itself is never stored: `key_hash`
    is its SHA-256 (the key is 256 random bits, so no salt or slow hash is needed), and
    `prefix` — the key's first characters, not secret — finds the row and tells keys apart
    in listings.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        CheckConstraint("(tenant_id IS NULL) = is_admin", name="ck_api_keys_scope"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
