"""What happened to a run's items besides their last outcome, read for people: what healed
and when (with the reasons it had before), what is still deferred, what was re-driven.

`GET /runs/{id}` and `pipeline runs show` both read it from here. An item's `history` is
written by several hands (the reconciler, replay, healing); what leaves this module is only
what an event is meant to hold — its time, its name, and codes, steps, statuses and vendor
names of a known shape — so a key added to an event, or a value that is free text, never
reaches an API client or a terminal (`public_event`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from pipeline.db.engine import session_scope
from pipeline.db.models import Deferral, DeferralStatus, RunItem, aware
from pipeline.deferrals import LIVE
from pipeline.runs import RunView, get_run

# A name we write (event, why, step, status, vendor): `redriven`, `find_contacts:primary`.
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}(:[a-z0-9_-]{1,47})?")
# A reason code: `CIRCUIT_OPEN:lusha`, `EXPORT_FIELDS_STRIPPED:autopost_bills+website`.
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}(:[A-Za-z0-9_.+-]{1,64})?")
OTHER_NAME, OTHER_REASON = "other", "OTHER"
_NAME_FIELDS = ("why", "step", "status")
_LIST_KEYS = {"reasons": (_REASON, OTHER_REASON), "vendors": (_NAME, OTHER_NAME)}


def public_name(value: Any) -> str:
    """`value` if it is a name of the shape we write, else `other`."""
    return value if isinstance(value, str) and _NAME.fullmatch(value) else OTHER_NAME


def public_reason(value: Any) -> str:
    """`value` if it is a reason code of the shape we write, else `OTHER`."""
    return value if isinstance(value, str) and _REASON.fullmatch(value) else OTHER_REASON


def public_event(raw: Any) -> dict[str, Any] | None:
    """One history event as it may be shown: `at` (a datetime, None if unreadable), `event`,
    and of `why`, `step`, `status`, `reasons`, `vendors` those it has. Other keys are
    dropped; a value not of its field's shape becomes `other` / `OTHER`. None: not an event."""
    if not isinstance(raw, Mapping):
        return None
    shown: dict[str, Any] = {"at": _moment(raw.get("at")), "event": public_name(raw.get("event"))}
    for key in _NAME_FIELDS:
        if raw.get(key) is not None:
            shown[key] = public_name(raw[key])
    for key, (shape, other) in _LIST_KEYS.items():
        if raw.get(key) is not None:
            values = raw[key].split(",") if isinstance(raw[key], str) else raw[key]
            if not isinstance(values, list):
                values = [values]
            shown[key] = [
                v if isinstance(v, str) and shape.fullmatch(v) else other for v in values if v != ""
            ]
    return shown


def public_history(history: Iterable[Any] | None) -> list[dict[str, Any]]:
    """An item's history, oldest first, each event through `public_event`."""
    return [e for e in (public_event(raw) for raw in history or []) if e is not None]


@dataclass(frozen=True)
class Heal:
    """One heal of an item: when, which vendors' work was redone, and what it was before."""

    at: datetime | None
    vendors: list[str]
    was_status: str | None
    was_reasons: list[str]


def heals(history: Iterable[dict[str, Any]]) -> list[Heal]:
    """The heals in a public history, oldest first; each takes its 'before' from the
    `healing` event that started it (None / [] when that event is not kept)."""
    found: list[Heal] = []
    started: dict[str, Any] | None = None
    for event in history:
        if event["event"] == "healing":
            started = event
        elif event["event"] == "healed":
            before = started or {}
            found.append(
                Heal(
                    at=event["at"],
                    vendors=list(event.get("vendors") or before.get("vendors") or []),
                    was_status=before.get("status"),
                    was_reasons=list(before.get("reasons") or []),
                )
            )
            started = None
    return found


def redrives_in(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reconciler's re-drives in a public history, oldest first."""
    return [event for event in history if event["event"] == "redriven"]


@dataclass(frozen=True)
class ItemDeferral:
    """A vendor whose work an item still waits for (or is being redone)."""

    vendor: str
    reason: str
    status: str
    attempts: int
    next_try_at: datetime


@dataclass(frozen=True)
class RunDetails:
    """A run, its items, their live deferrals (by item id) and its deferrals by status."""

    view: RunView
    deferred: dict[int, list[ItemDeferral]] = field(default_factory=dict)
    deferral_counts: dict[str, int] = field(default_factory=dict)

    @property
    def healed_items(self) -> list[RunItem]:
        """Items healed at least once, the latest heal first."""
        healed = [item for item in self.view.items if item.healed_at is not None]
        return sorted(healed, key=_healed_at, reverse=True)

    @property
    def last_healed_at(self) -> datetime | None:
        return max((_healed_at(item) for item in self.view.items if item.healed_at), default=None)

    @property
    def redriven_items(self) -> list[RunItem]:
        """Items the reconciler re-drove (by their count, or their history: a replay resets
        the count, not the history)."""
        return [
            item
            for item in self.view.items
            if item.redrives or any(_is_redrive(e) for e in item.history or [])
        ]


def read_run_details(run_id: uuid.UUID) -> RunDetails | None:
    """The run with its items and deferrals; None if there is no such run."""
    view = get_run(run_id)
    return with_deferrals(view) if view is not None else None


def with_deferrals(view: RunView) -> RunDetails:
    """`view` with its run's deferrals, read in one query whatever the number of items."""
    counts = dict.fromkeys(DeferralStatus, 0)
    deferred: dict[int, list[ItemDeferral]] = {}
    query = (
        select(
            Deferral.item_id,
            Deferral.vendor,
            Deferral.reason,
            Deferral.status,
            Deferral.attempts,
            Deferral.next_try_at,
        )
        .where(Deferral.run_id == view.run.id)
        .order_by(Deferral.item_id, Deferral.vendor)
    )
    with session_scope() as session:
        rows = session.execute(query).all()
    for item_id, vendor, reason, status, attempts, next_try_at in rows:
        if status in counts:
            counts[DeferralStatus(status)] += 1
        if status in LIVE:
            deferred.setdefault(int(item_id), []).append(
                ItemDeferral(
                    vendor=public_name(vendor),
                    reason=public_reason(reason),
                    status=str(status),
                    attempts=int(attempts),
                    next_try_at=aware(next_try_at),
                )
            )
    return RunDetails(view, deferred, {str(s): n for s, n in counts.items()})


def healed_counts(run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Items healed at least once, per run (runs with none are left out); one query."""
    ids = list(run_ids)
    if not ids:
        return {}
    query = (
        select(RunItem.run_id, func.count())
        .where(RunItem.run_id.in_(ids), RunItem.healed_at.is_not(None))
        .group_by(RunItem.run_id)
    )
    with session_scope() as session:
        return {run_id: int(n) for run_id, n in session.execute(query).all()}


def _healed_at(item: RunItem) -> datetime:
    return aware(item.healed_at) if item.healed_at is not None else datetime.min.replace(tzinfo=UTC)


def _is_redrive(raw: Any) -> bool:
    return isinstance(raw, Mapping) and raw.get("event") == "redriven"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return aware(value)
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None
