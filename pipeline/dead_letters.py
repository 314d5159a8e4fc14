"""The dead-letter store: every task that will not succeed by itself lands here once.

Celery on Redis has no dead-letter queue: a message whose retries ran out, that raised a
non-retryable error, hit its time limit, kept killing its worker, or that no task can run
(not even a message, undecodable, unknown) is simply gone. `workers.dead_letters` and
`workers.consumer` catch each of those paths and call `record`; operators list, read and
replay entries (`pipeline dlq`, the API).

Recording is idempotent per task id: a poison message that comes back updates its row
(`failures`, `last_failed_at`) instead of adding one. The run item the task worked on is
marked `dead` and its run's counts follow, so no run waits forever for it. While the
database is unreachable, entries wait in a Redis spool (`pipeline.dead_letter_spool`) until
`drain_spool` writes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline import metrics, runs
from pipeline.db.engine import session_scope
from pipeline.db.models import DeadLetter, DeadLetterStatus, ItemStatus, Run, utcnow
from pipeline.dead_letter_spool import DeadLetterSpool
from pipeline.errors import DATABASE_ERRORS, AlreadyReplayedError, NotFoundError

log = structlog.get_logger(__name__)
MAX_MESSAGE = 2000
MAX_TRACEBACK = 20000
# Messages no task can run (`workers.consumer`): their task name, if any, is not one of ours.
UNRUNNABLE = (
    "not_an_envelope",
    "undecodable",
    "refused_content",
    "no_task_name",
    "unknown_task",
    "invalid_task",
    "unprocessable",
)


@dataclass(frozen=True)
class Subject:
    """What a task worked on: its tenant, run and (for a per-item step) item."""

    tenant_id: int | None = None
    run_id: uuid.UUID | None = None
    item_id: int | None = None
    generation: int | None = None  # which copy of the item's work the task was (fencing)


def subject_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Subject:
    """Read the subject off a task's arguments: a step's context dict (`run_id`,
    `item_id`, `tenant_id`), or a run task's run id (its tenant read from the run);
    anything else has none."""
    subject = _subject_in(args, kwargs)
    if subject.tenant_id is None and subject.run_id is not None:
        return Subject(
            tenant_of_run(subject.run_id), subject.run_id, subject.item_id, subject.generation
        )
    return subject


def _subject_in(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Subject:
    """The subject as the arguments name it, without reading the database."""
    first = args[0] if args else None
    if isinstance(first, Mapping):
        source: Mapping[str, Any] = first
    else:
        source = {**kwargs, **({"run_id": first} if isinstance(first, str) else {})}
    tenant = source.get("tenant_id")
    item = source.get("item_id")
    return Subject(
        tenant_id=int(tenant) if isinstance(tenant, int | str) and str(tenant).isdigit() else None,
        run_id=_uuid(source.get("run_id")),
        item_id=int(item) if isinstance(item, int) else None,
        generation=generation if isinstance(generation := source.get("generation"), int) else None,
    )


def record(
    *,
    task_id: str,
    task_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    path: str,
    error_code: str,
    message: str,
    traceback: str = "",
    attempts: int = 1,
    correlation_id: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> int | None:
    """Keep a dead task (once per task id) and mark what it worked on dead; the entry id.

    With the database unreachable the entry is spooled in Redis instead (None is
    returned): `drain_spool` writes it, and marks its subject, once the database is back.
    With Redis down too it is logged and lost (the reconciler re-drives the item anyway)."""
    subject = _subject_in(args, kwargs) if path not in UNRUNNABLE else Subject()
    now = utcnow()
    row = {
        "task_id": task_id[:64],
        "task_name": task_name[:255],
        "args": list(args),
        "kwargs": dict(kwargs),
        "options": dict(options or {}),
        "tenant_id": subject.tenant_id,
        "run_id": subject.run_id,
        "item_id": subject.item_id,
        "path": path,
        "error_code": error_code[:64],
        "message": message[:MAX_MESSAGE],
        "traceback": traceback[-MAX_TRACEBACK:],
        "attempts": attempts,
        "correlation_id": (correlation_id or "")[:64] or None,
        "status": DeadLetterStatus.DEAD,
        "first_failed_at": now,
        "last_failed_at": now,
    }
    try:
        return _write(row)
    except DATABASE_ERRORS as error:
        log.warning("dead_letter.database_down", task_id=row["task_id"], error=type(error).__name__)
        DeadLetterSpool.from_settings().push(row)
        return None


def drain_spool() -> int:
    """Write the entries spooled while the database was down (oldest first), each once —
    an entry already written is merged, as a repeated report is — and mark their subjects
    dead; an entry leaves the spool only once written. How many were written. Never
    raises for an outage: the database or Redis down again ends the drain, the rest stays
    spooled for the next one."""
    return DeadLetterSpool.from_settings().drain(_write, stop_on=DATABASE_ERRORS)


def _write(row: dict[str, Any]) -> int:
    """Insert (or merge) the entry and mark its subject dead; the entry id."""
    if row["tenant_id"] is None and row["run_id"] is not None:
        row = {**row, "tenant_id": tenant_of_run(row["run_id"])}
    entry_id, new_death, replayed = _insert_or_count(row)
    path, code = row["path"], row["error_code"]
    if new_death:
        metrics.count_dead_letter(path if path in UNRUNNABLE else row["task_name"])
    if not replayed:  # a late report of a death already replayed must not kill the replay
        subject = Subject(row["tenant_id"], row["run_id"], row["item_id"])
        _mark_subject_dead(subject, f"DEAD_LETTER:{code[:40]}")
    log.error(
        "task.dead_lettered",
        dead_letter_id=entry_id,
        task=row["task_name"],
        path=path,
        error_code=code,
        run_id=str(row["run_id"]) if row["run_id"] else None,
        item_id=row["item_id"],
    )
    return entry_id


def _insert_or_count(row: dict[str, Any]) -> tuple[int, bool, bool]:
    """The entry's id, whether this is a new death (not one reported again), and whether
    the entry was replayed already.

    Celery reports some deaths twice — a hard time limit from its timer (without the
    task's context: no chain, no retry count, no correlation id) and again from the pool
    (with it) — so a report for a task id already here fills in what the first lacked
    instead of adding a failure. A report for an entry already replayed changes nothing.
    """
    for _ in range(2):  # a concurrent first insert of the same task id: merge instead
        with session_scope() as session:
            existing = session.scalars(
                select(DeadLetter).where(DeadLetter.task_id == row["task_id"]).with_for_update()
            ).first()
            if existing is not None:
                if existing.status != DeadLetterStatus.DEAD:
                    return existing.id, False, True
                new_path = existing.path != row["path"]
                existing.failures += 1 if new_path else 0
                existing.last_failed_at = row["last_failed_at"]
                existing.path, existing.error_code = row["path"], row["error_code"]
                existing.message = row["message"] or existing.message
                existing.traceback = row["traceback"] or existing.traceback
                existing.attempts = max(existing.attempts, row["attempts"])
                existing.options = {**row["options"], **(existing.options or {})}
                if not existing.options.get("chain") and row["options"].get("chain"):
                    existing.options = {**existing.options, "chain": row["options"]["chain"]}
                existing.correlation_id = existing.correlation_id or row["correlation_id"]
                return existing.id, new_path, False
        try:
            with session_scope() as session:
                new_id = session.scalar(insert(DeadLetter).values(**row).returning(DeadLetter.id))
                return int(new_id or 0), True, False
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record dead letter for task {row['task_id']}")


def _mark_subject_dead(subject: Subject, reason: str) -> None:
    """The item (or, for a run task, every open item of the run) is dead: the run closes."""
    if subject.run_id is None:
        return
    try:
        if subject.item_id is not None:  # one item, of that run and copy of its work
            if subject.tenant_id is not None:
                fence = (subject.run_id, subject.tenant_id, subject.generation)
                runs.finish_item(subject.item_id, ItemStatus.DEAD, [reason], fence=fence)
            return
        for item_id in runs.open_item_ids(subject.run_id):
            runs.finish_item(item_id, ItemStatus.DEAD, [reason])
    except Exception as error:  # the entry is kept; the item can be replayed by hand
        log.error("dead_letter.subject_not_marked", error=type(error).__name__)


# -- reading -----------------------------------------------------------------------------------


def list_entries(
    *,
    tenant_id: int | None = None,
    run_id: uuid.UUID | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[DeadLetter]:
    """Newest first, filtered by tenant, run and status."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit).offset(offset)
    if tenant_id is not None:
        query = query.where(DeadLetter.tenant_id == tenant_id)
    if run_id is not None:
        query = query.where(DeadLetter.run_id == run_id)
    if status is not None:
        query = query.where(DeadLetter.status == status)
    with session_scope() as session:
        return list(session.scalars(query))


def get_entry(entry_id: int, *, tenant_id: int | None = None) -> DeadLetter:
    """The entry; `NotFoundError` if there is none (or it belongs to another tenant)."""
    with session_scope() as session:
        entry = session.get(DeadLetter, entry_id)
    if entry is None or (tenant_id is not None and entry.tenant_id != tenant_id):
        raise NotFoundError(f"no dead letter {entry_id}")
    return entry


def claim_for_replay(entry_id: int, replay_task_id: str, *, tenant_id: int | None = None) -> None:
    """Mark the entry replayed by `replay_task_id` — once: of two concurrent replays one
    wins, the other gets `AlreadyReplayedError`."""
    get_entry(entry_id, tenant_id=tenant_id)
    with session_scope() as session:
        claimed = session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == entry_id, DeadLetter.status == DeadLetterStatus.DEAD)
            .values(
                status=DeadLetterStatus.REPLAYED,
                replayed_at=utcnow(),
                replay_task_id=replay_task_id,
            )
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            raise AlreadyReplayedError(f"dead letter {entry_id} was already replayed")


def unclaim(entry_id: int) -> None:
    """Undo a claim whose replay could not be sent (the broker was down)."""
    with session_scope() as session:
        session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == entry_id)
            .values(status=DeadLetterStatus.DEAD, replayed_at=None, replay_task_id=None)
        )


def dead_entries_of_run(run_id: uuid.UUID) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DeadLetter.id).where(
                    DeadLetter.run_id == run_id, DeadLetter.status == DeadLetterStatus.DEAD
                )
            )
        )


def purge(older_than: timedelta, *, now: datetime | None = None) -> int:
    """Delete entries whose last failure is older than `older_than`; how many."""
    cutoff = (now or utcnow()) - older_than
    with session_scope() as session:
        gone = session.execute(delete(DeadLetter).where(DeadLetter.last_failed_at < cutoff))
        return int(gone.rowcount)  # type: ignore[attr-defined]


def tenant_of_run(run_id: uuid.UUID) -> int | None:
    with session_scope() as session:
        return session.scalar(select(Run.tenant_id).where(Run.id == run_id))


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
