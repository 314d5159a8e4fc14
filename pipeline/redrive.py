"""Finding work whose message was lost, and sending it again (a step of every reconciler
pass; see `pipeline.reconciler` for when a silence counts as a loss).

- An enrichment item that reached a step goes on from that step, with the context it had
  there, as a new copy of its work (its `generation` bumped: an old message that turns up
  late stops at its next step).
- Anything else — an enrichment item no step took up yet, a CRM sync's or an export's
  items — goes back to its run's task, which works through the run's open items: the run
  is claimed and sent once, whatever the number of its items.
- Work re-driven `RECONCILE_MAX_REDRIVES` times is given up: dead-lettered as `stalled`
  with its history (a CRM sync or export: the run's open items at once), so its run still
  closes and `pipeline dlq replay` can try again with a fresh count.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import structlog

from pipeline import dead_letters, progress
from pipeline.db.models import RunKind
from pipeline.settings import Settings

log = structlog.get_logger(__name__)
BATCH = 2000  # quiet items looked at per pass; the next pass takes the rest


class Dispatch(Protocol):
    def resume(self, item: progress.OpenItem, generation: int) -> None:
        """Send an enrichment item's work again from its checkpoint step, as `generation`."""

    def resend_run(self, kind: str, run_id: uuid.UUID) -> None:
        """Send a run's task again (it works through the run's open items)."""


# An open item -> why it counts as lost ("lease", "redis_reset"), or None: not lost.
LossTest = Callable[[progress.OpenItem], str | None]


class Redriver:
    def __init__(self, settings: Settings, dispatch: Dispatch) -> None:
        self.settings, self.dispatch = settings, dispatch

    def run(
        self, before: datetime, lost: LossTest, *, now: datetime, tenant_id: int | None
    ) -> tuple[Counter[str], int]:
        """Re-drive the lost among the open items quiet since `before`; (re-driven by kind,
        given up)."""
        redriven: Counter[str] = Counter()
        given_up = 0
        by_run: dict[tuple[str, uuid.UUID], list[tuple[progress.OpenItem, str]]] = defaultdict(list)
        for item in progress.quiet_items(before, tenant_id=tenant_id, limit=BATCH):
            why = lost(item)
            if why is None:
                continue
            if item.kind == RunKind.ENRICHMENT and item.resumable:
                if item.redrives >= self.settings.reconcile_max_redrives:
                    given_up += self._give_up([item], now, run_task=False)
                elif self._claim([(item, why)], to_pending=False):
                    redriven[item.kind] += 1
                    self._send(partial(self.dispatch.resume, item, item.generation + 1))
            else:
                by_run[(item.kind, item.run_id)].append((item, why))
        for (kind, run_id), found in by_run.items():
            run_task = kind != RunKind.ENRICHMENT  # one task works every open item
            spent = [i for i, _ in found if i.redrives >= self.settings.reconcile_max_redrives]
            if spent and run_task:  # one task works every open item: they go together
                given_up += self._give_up([i for i, _ in found], now, run_task=True)
                continue
            for item in spent:  # each its own entry: an entry marks one item dead
                given_up += self._give_up([item], now, run_task=False)
            if len(spent) == len(found):
                continue
            event = {"event": "redriven", "why": found[0][1], "step": found[0][0].step}
            quiet_till = max(i.progress_at for i, _ in found) + timedelta(microseconds=1)
            claimed = progress.claim_run(
                run_id, quiet_till, event, to_pending=not run_task, unstarted_only=not run_task
            )
            if claimed:
                redriven[kind] += claimed
                self._send(partial(self.dispatch.resend_run, kind, run_id))
        return redriven, given_up

    @staticmethod
    def _claim(found: list[tuple[progress.OpenItem, str]], *, to_pending: bool) -> int:
        (item, why), *_ = found
        event = {"event": "redriven", "why": why, "step": item.step}
        return progress.claim_redrive([item], event, to_pending=to_pending)

    @staticmethod
    def _send(send: Callable[[], Any]) -> None:
        """A send the broker refuses is logged, not raised: the claim stands, and the work,
        still quiet, is found again after another lease."""
        try:
            send()
        except Exception as exc:
            log.error("reconciler.redrive_unsent", error=type(exc).__name__)

    def _give_up(self, items: list[progress.OpenItem], now: datetime, *, run_task: bool) -> int:
        """Dead-letter work that stays lost however often it is sent: an item, or (for a run
        task) the run's open items in one entry. Claimed first, so work that moved
        meanwhile is left alone; each entry a task id of its own, so a later stall after a
        replay is recorded afresh."""
        if not progress.claim_redrive(items, {"event": "stalled"}, to_pending=False):
            return 0
        first = items[0]
        quiet_s = round((now - min(i.progress_at for i in items)).total_seconds())
        subject: dict[str, Any] = {"run_id": str(first.run_id), "tenant_id": first.tenant_id}
        if not run_task:
            subject["item_id"] = first.id
        dead_letters.record(
            task_id=f"stalled:{uuid.uuid4().hex}",
            task_name=f"stalled:{first.kind}",
            args=[],
            kwargs=subject,
            path="stalled",
            error_code="STALLED",
            message=(
                f"no progress for {quiet_s}s after {first.redrives} re-drives "
                f"(last step: {first.step or first.status})"
            ),
            attempts=first.redrives + 1,
            options={"history": first.history, "step": first.step},
        )
        return len(items)
