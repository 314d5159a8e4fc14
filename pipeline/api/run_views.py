"""What `GET /runs` and `GET /runs/{id}` answer: a run's summary, and in detail its items
with what healed and when, what is still deferred and what was re-driven.

Item histories and deferrals pass through `pipeline.run_details` on their way out, so only
codes, steps, statuses and vendor names of the shape we write can reach a client.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.db.models import Run, RunItem, RunKind, RunStatus
from pipeline.run_details import RunDetails, public_history


def _split_reasons(value: Any) -> Any:
    """'CRAWL_THIN,TAVILY_FAIL' (as stored) → ['CRAWL_THIN', 'TAVILY_FAIL']."""
    return [r for r in (value or "").split(",") if r] if isinstance(value, str | None) else value


Reasons = Annotated[list[str], BeforeValidator(_split_reasons)]


class RunSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    tenant_id: int
    kind: RunKind
    status: RunStatus
    degraded: bool
    degraded_reasons: Reasons
    items_total: int
    items_succeeded: int
    items_degraded: int
    items_failed: int
    items_dead: int
    parent_run_id: uuid.UUID | None
    export_disabled: bool
    export_disabled_reason: str | None
    correlation_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    healed: int = Field(default=0, description="items healed at least once")


class ItemEvent(BaseModel):
    """One event of an item's history. Only these fields are ever shown, and only codes,
    steps, statuses and vendor names of the shape we write (anything else reads `other` /
    `OTHER`); a field an event does not have is null."""

    at: datetime | None = Field(description="when it happened (UTC)")
    event: str = Field(
        description="`redriven` (the reconciler re-sent its lost work: `why`, `step`), "
        "`reopened` (a replay: `status`, `reasons` before it), `healing` (a heal started: "
        "`status`, `reasons` before it, `vendors` to redo), `healed` (`vendors` redone)"
    )
    why: str | None = Field(default=None, description="`redriven`: `lease` or `redis_reset`")
    step: str | None = Field(default=None, description="`redriven`: the step it resumed from")
    status: str | None = Field(default=None, description="the item's status before it")
    reasons: list[str] | None = Field(default=None, description="its reasons before it")
    vendors: list[str] | None = None


class ItemDeferralOut(BaseModel):
    """Work the item waits to have redone when its vendor is back (`pipeline.healing`)."""

    model_config = ConfigDict(from_attributes=True)

    vendor: str
    reason: str = Field(description="why it was deferred, e.g. `CIRCUIT_OPEN:lusha`")
    status: Literal["waiting", "healing"]
    attempts: int = Field(description="heals tried so far")
    next_try_at: datetime


class RunItemOut(BaseModel):
    id: int
    item_key: str
    status: str
    degraded_reasons: Reasons
    attempts: int
    last_error_code: str | None
    updated_at: datetime
    step: str | None = Field(description="the last step its work reached")
    progress_at: datetime | None = Field(description="when its work last moved")
    redrives: int = Field(description="times the reconciler re-sent its lost work")
    healed_at: datetime | None = Field(description="when it last healed (null: never)")
    history: list[ItemEvent] = Field(
        description="re-drives, replays and heals, oldest first: its old reasons are kept here"
    )
    deferred: list[ItemDeferralOut] = Field(description="vendors it still waits for")


class DeferralCounts(BaseModel):
    """A run's deferred work (one per item and vendor), by where it stands."""

    waiting: int = Field(description="for the vendor to be back")
    healing: int = Field(description="being redone now")
    healed: int
    expired: int = Field(description="given up (window or attempts spent): stays degraded")


class RunDetail(RunSummary):
    options: dict[str, Any]
    vendor_stats: dict[str, Any]
    recovered: int = Field(
        description="CRM sync: items a batch write refused that then succeeded one by one"
    )
    last_healed_at: datetime | None = Field(description="when an item last healed")
    redriven: int = Field(description="items the reconciler re-drove at least once")
    deferred: DeferralCounts
    items: list[RunItemOut]


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


def run_summary(run: Run, *, healed: int) -> RunSummary:
    return RunSummary.model_validate(run).model_copy(update={"healed": healed})


def run_detail(details: RunDetails) -> RunDetail:
    """The detail of a run, from its items and deferrals."""
    run = details.view.run
    return RunDetail.model_validate(
        {
            **RunSummary.model_validate(run).model_dump(),
            "healed": len(details.healed_items),
            "options": run.options or {},
            "vendor_stats": run.vendor_stats or {},
            "recovered": details.view.recovered,
            "last_healed_at": details.last_healed_at,
            "redriven": len(details.redriven_items),
            "deferred": details.deferral_counts,
            "items": [_item(item, details) for item in details.view.items],
        }
    )


def _item(item: RunItem, details: RunDetails) -> RunItemOut:
    return RunItemOut(
        id=item.id,
        item_key=item.item_key,
        status=item.status,
        degraded_reasons=_split_reasons(item.degraded_reasons),
        attempts=item.attempts,
        last_error_code=item.last_error_code,
        updated_at=item.updated_at,
        step=item.step,
        progress_at=item.progress_at,
        redrives=item.redrives,
        healed_at=item.healed_at,
        history=[ItemEvent.model_validate(event) for event in public_history(item.history)],
        deferred=[
            ItemDeferralOut.model_validate(deferral)
            for deferral in details.deferred.get(item.id, [])
        ],
    )
