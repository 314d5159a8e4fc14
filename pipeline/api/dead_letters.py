"""`/dead-letters`: what died, why, and putting it right.

A tenant key sees its own tenant's entries; another tenant's id answers 404, like one
that does not exist. Replaying is 202 with the new task id; an entry already replayed
(perhaps by a concurrent request) is 409 `ALREADY_REPLAYED`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pipeline import dead_letters
from pipeline.api.auth import AnyCaller
from pipeline.api.errors import invalid_field
from pipeline.api.inputs import PageLimit, PageOffset, RowIdPath, TenantQuery
from pipeline.api.responses import keyed
from pipeline.errors import InputError
from pipeline.replay import replay_entry

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


class DeadLetterSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: str
    task_name: str
    task_id: str
    path: str = Field(
        description=(
            "failure | rejected | time_limit | worker_lost; a message no task can run: "
            "not_an_envelope | undecodable | refused_content | no_task_name | unknown_task | "
            "invalid_task | unprocessable"
        )
    )
    error_code: str
    message: str
    tenant_id: int | None
    run_id: uuid.UUID | None
    item_id: int | None
    attempts: int
    failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    correlation_id: str | None
    replay_task_id: str | None
    replayed_at: datetime | None


class DeadLetterDetail(DeadLetterSummary):
    args: list[Any]
    kwargs: dict[str, Any]
    traceback: str | None = Field(description="admin keys only: it shows our code")


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterSummary]
    next_offset: int | None


class ReplayAccepted(BaseModel):
    dead_letter_id: int
    replay_task_id: str


@router.get("", response_model=DeadLetterPage, responses=keyed(404, 422))
def list_dead_letters(
    caller: AnyCaller,
    tenant: TenantQuery = None,
    run: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern="^(dead|replayed)$")] = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> DeadLetterPage:
    """Newest first; filter by tenant (admins), run and status."""
    entries = dead_letters.list_entries(
        tenant_id=caller.tenant_scope(tenant),
        run_id=run,
        status=status,
        limit=limit + 1,
        offset=offset,
    )
    return DeadLetterPage(
        dead_letters=[DeadLetterSummary.model_validate(e) for e in entries[:limit]],
        next_offset=offset + limit if len(entries) > limit else None,
    )


@router.get("/{entry_id}", response_model=DeadLetterDetail, responses=keyed(404, 422))
def get_dead_letter(entry_id: RowIdPath, caller: AnyCaller) -> DeadLetterDetail:
    """One entry with its arguments (never secrets); the traceback for admin keys."""
    entry = dead_letters.get_entry(entry_id, tenant_id=caller.tenant_scope(None))
    detail = DeadLetterDetail.model_validate(entry)
    return detail if caller.is_admin else detail.model_copy(update={"traceback": None})


@router.post(
    "/{entry_id}/replay",
    status_code=202,
    response_model=ReplayAccepted,
    responses=keyed(404, 409, 422),
)
def replay_dead_letter(entry_id: RowIdPath, caller: AnyCaller) -> ReplayAccepted:
    """Re-send the entry's task under a new id (once; 409 if it was already replayed; 422
    for a message no task can run)."""
    try:
        task_id = replay_entry(entry_id, tenant_id=caller.tenant_scope(None))
    except InputError as exc:
        raise invalid_field("path.entry_id", exc.message) from None
    return ReplayAccepted(dead_letter_id=entry_id, replay_task_id=task_id)
