"""Replay from the dead-letter store: one entry, one run's dead items, or a tenant's.

- **An entry** is re-sent as its original task (same arguments, the rest of its chain)
  under a new task id, linked both ways: the entry records `replay_task_id`, the message
  carries the header `x_dead_letter_id`. The entry is claimed first (one conditional
  UPDATE), so two concurrent replays send it once; the loser gets `AlreadyReplayedError`.
  A step whose chain was not kept (Celery reported its death without the task's context)
  is replayed as its item from the start, through the run's task.
- **A run** re-runs only its dead and failed items: they are reopened (the run opens
  again and its counts are recomputed when they finish), the run's dead entries are marked
  replayed by the run task sent once — run tasks work only on open items, so items that
  succeeded are never redone.

If anything fails before the message is on the broker, everything is put back as it was —
items with their old status and reasons, the run closed, entries dead — so a later replay
can try again; nothing is left open forever.
The replayed task carries the caller's correlation id when there is one.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from pipeline import dead_letters, runs
from pipeline.correlation import current_correlation_id
from pipeline.db.models import DeadLetter, ItemStatus, RunStatus
from pipeline.enqueue import send_run
from pipeline.errors import (
    AlreadyReplayedError,
    DependencyUnavailableError,
    InputError,
    NotFoundError,
    PipelineError,
)
from pipeline.reopening import ReopenedItem, reopen_items, restore_items

log = structlog.get_logger(__name__)
HEADER = "x_dead_letter_id"


def replay_entry(entry_id: int, *, tenant_id: int | None = None) -> str:
    """Re-send one dead letter's task; the new task id. `NotFoundError` (no such entry, or
    another tenant's), `AlreadyReplayedError`, `InputError` (nothing to replay),
    `DependencyUnavailableError` (broker down: the entry stays dead)."""
    entry = dead_letters.get_entry(entry_id, tenant_id=tenant_id)
    if entry.path in dead_letters.UNRUNNABLE:
        raise InputError(f"dead letter {entry_id} is a message no task can run ({entry.path})")
    replay_id = uuid.uuid4().hex
    dead_letters.claim_for_replay(entry_id, replay_id, tenant_id=tenant_id)
    reopened: list[ReopenedItem] = []
    try:
        cid = current_correlation_id() or entry.correlation_id or replay_id
        headers = {HEADER: str(entry_id)}
        # Without the task's context (Celery reported the death from the main process) a
        # missing chain proves nothing: replay the item from its start, through the run.
        whole_item = entry.item_id is not None and not entry.options.get("context")
        if entry.run_id is not None and (entry.item_id is None or whole_item):
            items = None if entry.item_id is None else [entry.item_id]
            reopened = reopen_items(entry.run_id, items)
            view = runs.get_run(entry.run_id)
            kind = view.run.kind if view else ""
            send_run(
                kind, entry.run_id, cid, fail_if_unsent=False, task_id=replay_id, headers=headers
            )
        else:
            args = list(entry.args)
            if entry.run_id is not None and entry.item_id is not None:
                # the step goes on with the rest of its chain: the item is queued, not pending
                reopened = reopen_items(entry.run_id, [entry.item_id], to=ItemStatus.QUEUED)
                if reopened and args and isinstance(args[0], dict):
                    # as the new copy of the item's work (an older one stops at its next step)
                    args[0] = {**args[0], "generation": reopened[0].generation}
            _send_task(entry, args, replay_id, cid, headers)
    except BaseException as exc:
        put_back(reopened, [entry_id])
        raise _unsent(exc) from None
    log.info("dead_letter.replayed", dead_letter_id=entry_id, replay_task_id=replay_id)
    return replay_id


def replay_run(run_id: uuid.UUID | str, *, tenant_id: int | None = None) -> int:
    """Re-run a run's dead and failed items; how many were reopened (0: nothing to do —
    unless the run was created and never sent, which is sent now)."""
    run_uuid = runs.run_id_from(run_id)
    view = runs.get_run(run_uuid)
    if view is None or (tenant_id is not None and view.run.tenant_id != tenant_id):
        raise NotFoundError(f"no run {run_uuid}")
    replay_id = uuid.uuid4().hex
    claimed: list[int] = []
    reopened: list[ReopenedItem] = []
    try:
        for entry_id in dead_letters.dead_entries_of_run(run_uuid):
            try:
                dead_letters.claim_for_replay(entry_id, replay_id)
                claimed.append(entry_id)
            except AlreadyReplayedError:
                continue  # a concurrent replay took it
        reopened = reopen_items(run_uuid)
        never_sent = view.run.status == RunStatus.PENDING and view.run.sent_at is None
        if reopened or never_sent:
            cid = current_correlation_id() or view.run.correlation_id or replay_id
            headers = {HEADER: ",".join(map(str, claimed))} if claimed else {}
            send_run(
                view.run.kind,
                run_uuid,
                cid,
                fail_if_unsent=False,
                task_id=replay_id,
                headers=headers,
            )
        else:
            put_back([], claimed)  # nothing to send: the entries stay as they were
    except BaseException as exc:
        put_back(reopened, claimed)
        raise _unsent(exc) from None
    log.info("run.replayed", run_id=str(run_uuid), items=len(reopened), task_id=replay_id)
    return len(reopened)


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


def put_back(reopened: list[ReopenedItem], claimed: list[int]) -> None:
    """Undo a replay that was not sent: items back as they were (their run closes again),
    entries dead again — so a later replay can try again and nothing is left open."""
    restore_items(reopened)
    for entry_id in claimed:
        dead_letters.unclaim(entry_id)


def _unsent(exc: BaseException) -> BaseException:
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, Exception):
        return DependencyUnavailableError(
            f"the broker is unreachable ({type(exc).__name__}); nothing was replayed"
        )
    return exc


def _send_task(
    entry: DeadLetter, args: list[Any], task_id: str, cid: str, headers: dict[str, str]
) -> None:
    from workers.app import app

    options: dict[str, Any] = {}
    if entry.options.get("chain"):
        options["chain"] = entry.options["chain"]
    app.send_task(
        entry.task_name,
        args=args,
        kwargs=entry.kwargs,
        task_id=task_id,
        headers={**headers, "x_correlation_id": cid},
        **options,
    )
