"""Replay from the dead-letter store: one entry, one run's dead items, or a tenant's.

- **An entry** is re-sent as its original task (same arguments, the rest of its chain)
  under a new task id, linked both ways: the entry records `replay_task_id`, the message
  carries the header `x_dead_letter_id`. The entry is claimed first (one conditional
  UPDATE), so two concurrent replays send it once; the loser gets `AlreadyReplayedError`.
- **A run** re-runs only its dead and failed items: they are reopened (the run opens
  again and its counts are recomputed when they finish), the run's dead entries are marked
  replayed, and the run's task is sent once — run tasks work only on open items, so items
  that succeeded are never redone.

Each replayed item's success updates its run's status and counts through the same latch
that closed the run the first time.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from pipeline import dead_letters, runs
from pipeline.correlation import current_correlation_id
from pipeline.db.models import ItemStatus
from pipeline.errors import (
    AlreadyReplayedError,
    DependencyUnavailableError,
    InputError,
    NotFoundError,
)

log = structlog.get_logger(__name__)
HEADER = "x_dead_letter_id"


def replay_entry(entry_id: int, *, tenant_id: int | None = None) -> str:
    """Re-send one dead letter's task; the new task id. `NotFoundError` (no such entry, or
    another tenant's), `AlreadyReplayedError`, `InputError` (nothing to replay),
    `DependencyUnavailableError` (broker down: the entry stays dead)."""
    from workers.app import app

    entry = dead_letters.get_entry(entry_id, tenant_id=tenant_id)
    if entry.path in dead_letters.UNRUNNABLE:
        raise InputError(f"dead letter {entry_id} is a message no task can run ({entry.path})")
    replay_id = uuid.uuid4().hex
    dead_letters.claim_for_replay(entry_id, replay_id, tenant_id=tenant_id)
    if entry.run_id is not None:
        items = [entry.item_id] if entry.item_id is not None else None
        # a step goes on with its chain (queued); a run task claims pending items itself
        to = ItemStatus.QUEUED if entry.item_id is not None else ItemStatus.PENDING
        runs.reopen_items(entry.run_id, items, to=to)
    options: dict[str, Any] = {}
    if entry.options.get("chain"):
        options["chain"] = entry.options["chain"]
    try:
        app.send_task(
            entry.task_name,
            args=entry.args,
            kwargs=entry.kwargs,
            task_id=replay_id,
            headers={
                "x_correlation_id": entry.correlation_id or current_correlation_id() or replay_id,
                HEADER: str(entry_id),
            },
            **options,
        )
    except Exception as exc:
        dead_letters.unclaim(entry_id)
        raise DependencyUnavailableError(
            f"the broker is unreachable ({type(exc).__name__}); dead letter {entry_id} not replayed"
        ) from None
    log.info("dead_letter.replayed", dead_letter_id=entry_id, replay_task_id=replay_id)
    return replay_id


def replay_run(run_id: uuid.UUID | str, *, tenant_id: int | None = None) -> int:
    """Re-run a run's dead and failed items; how many were reopened (0: nothing to do)."""
    from pipeline.enqueue import send_run

    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        raise InputError(f"not a run id: {run_id!r}") from None
    view = runs.get_run(run_uuid)
    if view is None or (tenant_id is not None and view.run.tenant_id != tenant_id):
        raise NotFoundError(f"no run {run_uuid}")
    replay_id = uuid.uuid4().hex
    for entry_id in dead_letters.dead_entries_of_run(run_uuid):
        try:
            dead_letters.claim_for_replay(entry_id, replay_id)
        except AlreadyReplayedError:
            continue  # a concurrent replay took it
    reopened = runs.reopen_items(run_uuid)
    if reopened:
        cid = view.run.correlation_id or current_correlation_id() or replay_id
        send_run(view.run.kind, run_uuid, cid, fail_if_unsent=False)
    log.info("run.replayed", run_id=str(run_uuid), items=reopened)
    return reopened


def replay_tenant(tenant_id: int) -> int:
    """Replay all the tenant's dead letters: each run that has some (its dead and failed
    items), and each entry outside a run; how many items and entries were replayed."""
    entries = dead_letters.list_entries(tenant_id=tenant_id, status="dead", limit=10_000)
    run_ids = {entry.run_id for entry in entries if entry.run_id is not None}
    replayed = sum(replay_run(run_id, tenant_id=tenant_id) for run_id in run_ids)
    for entry in entries:
        if entry.run_id is None and entry.path not in dead_letters.UNRUNNABLE:
            try:
                replay_entry(entry.id, tenant_id=tenant_id)
                replayed += 1
            except AlreadyReplayedError:
                continue
    return replayed
