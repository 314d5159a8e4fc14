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

If the send fails (broker down) everything is put back as it was — items dead again, the
run closed, entries dead — so a later replay can try again; nothing is left open forever.
The replayed task carries the caller's correlation id when there is one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import structlog

from pipeline import dead_letters, runs
from pipeline.correlation import current_correlation_id
from pipeline.db.models import DeadLetter, ItemStatus
from pipeline.errors import (
    AlreadyReplayedError,
    DependencyUnavailableError,
    InputError,
    NotFoundError,
)

log = structlog.get_logger(__name__)
HEADER = "x_dead_letter_id"
NOT_SENT = "REPLAY_NOT_SENT"


def replay_entry(entry_id: int, *, tenant_id: int | None = None) -> str:
    """Re-send one dead letter's task; the new task id. `NotFoundError` (no such entry, or
    another tenant's), `AlreadyReplayedError`, `InputError` (nothing to replay),
    `DependencyUnavailableError` (broker down: the entry stays dead)."""
    entry = dead_letters.get_entry(entry_id, tenant_id=tenant_id)
    if entry.path in dead_letters.UNRUNNABLE:
        raise InputError(f"dead letter {entry_id} is a message no task can run ({entry.path})")
    replay_id = uuid.uuid4().hex
    dead_letters.claim_for_replay(entry_id, replay_id, tenant_id=tenant_id)
    cid = current_correlation_id() or entry.correlation_id or replay_id
    headers = {HEADER: str(entry_id)}
    step_without_chain = entry.item_id is not None and not entry.options.get("chain")
    if entry.run_id is not None and (entry.item_id is None or step_without_chain):
        reopened = runs.reopen_items(
            entry.run_id, None if entry.item_id is None else [entry.item_id]
        )
        view = runs.get_run(entry.run_id)
        kind = view.run.kind if view else ""
        send_or_undo(
            lambda: _send_run(kind, entry.run_id, cid, replay_id, headers), reopened, [entry_id]
        )
    else:
        reopened = (
            runs.reopen_items(entry.run_id, [entry.item_id], to=ItemStatus.QUEUED)
            if entry.run_id is not None and entry.item_id is not None
            else []
        )
        send_or_undo(lambda: _send_task(entry, replay_id, cid, headers), reopened, [entry_id])
    log.info("dead_letter.replayed", dead_letter_id=entry_id, replay_task_id=replay_id)
    return replay_id


def replay_run(run_id: uuid.UUID | str, *, tenant_id: int | None = None) -> int:
    """Re-run a run's dead and failed items; how many were reopened (0: nothing to do,
    unless open items were left unsent — then the run's task is sent again anyway)."""
    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        raise InputError(f"not a run id: {run_id!r}") from None
    view = runs.get_run(run_uuid)
    if view is None or (tenant_id is not None and view.run.tenant_id != tenant_id):
        raise NotFoundError(f"no run {run_uuid}")
    replay_id = uuid.uuid4().hex
    claimed = []
    for entry_id in dead_letters.dead_entries_of_run(run_uuid):
        try:
            dead_letters.claim_for_replay(entry_id, replay_id)
            claimed.append(entry_id)
        except AlreadyReplayedError:
            continue  # a concurrent replay took it
    reopened = runs.reopen_items(run_uuid)
    stuck = any(item.status not in runs.TERMINAL for item in view.items)
    if reopened or stuck:
        cid = current_correlation_id() or view.run.correlation_id or replay_id
        headers = {HEADER: ",".join(map(str, claimed))} if claimed else {}
        send_or_undo(
            lambda: _send_run(view.run.kind, run_uuid, cid, replay_id, headers),
            reopened,
            claimed,
        )
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


def send_or_undo(send: Callable[[], Any], reopened: list[int], claimed: list[int]) -> None:
    """Send; if the broker refuses, close the reopened items again and unclaim the entries."""
    try:
        send()
    except Exception as exc:
        for item_id in reopened:
            runs.finish_item(item_id, ItemStatus.DEAD, [NOT_SENT])
        for entry_id in claimed:
            dead_letters.unclaim(entry_id)
        if isinstance(exc, DependencyUnavailableError):
            raise
        raise DependencyUnavailableError(
            f"the broker is unreachable ({type(exc).__name__}); nothing was replayed"
        ) from None


def _send_run(kind: str, run_id: Any, cid: str, task_id: str, headers: dict[str, str]) -> str:
    from pipeline.enqueue import send_run

    return send_run(kind, run_id, cid, fail_if_unsent=False, task_id=task_id, headers=headers)


def _send_task(entry: DeadLetter, task_id: str, cid: str, headers: dict[str, str]) -> None:
    from workers.app import app

    options: dict[str, Any] = {}
    if entry.options.get("chain"):
        options["chain"] = entry.options["chain"]
    app.send_task(
        entry.task_name,
        args=entry.args,
        kwargs=entry.kwargs,
        task_id=task_id,
        headers={**headers, "x_correlation_id": cid},
        **options,
    )
