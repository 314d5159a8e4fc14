"""`/runs`: enqueue a run (enrichment, CRM sync, export — or a chain of them) and read runs.

`POST /runs` goes through `pipeline.enqueue`, like any web app would: the same checks, the
same run rows, the same task headers — with this request's correlation id. `GET /runs` pages
newest first by an opaque `cursor` (keyset: a run created meanwhile never shifts a page);
`next_cursor` is null on the last page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from pipeline import enqueue, replay, runs
from pipeline.api.auth import AnyCaller
from pipeline.api.bodies import JsonBody
from pipeline.api.errors import invalid_field, located
from pipeline.api.inputs import TENANT_HELP, PageLimit, RowId, TenantId, TenantQuery
from pipeline.api.responses import keyed
from pipeline.api.run_views import RunDetail, RunPage, run_detail, run_summary
from pipeline.db.models import RunKind, RunStatus
from pipeline.enqueue import CompanyInput
from pipeline.errors import InputError, NotFoundError
from pipeline.run_details import healed_counts, with_deferrals

router = APIRouter(prefix="/runs", tags=["runs"])


# -- what a client sends ---------------------------------------------------------------------


class EnrichmentFlags(BaseModel):
    """Feature flags for this run; those left out come from the workers' settings."""

    model_config = ConfigDict(extra="forbid")

    enable_tavily_fallback: StrictBool | None = None
    enable_apify_linkedin: StrictBool | None = None
    enable_lusha_fallback: StrictBool | None = None


class CompanyEntry(CompanyInput):
    """A company to enrich: the id of one the tenant has (a bare integer, or `{"id": n}`),
    or a new one by `name` and/or `domain`. One model rather than a union, so an error
    names the field itself (`companies.0.domain`), not a union member."""

    id: RowId | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _id_alone(self) -> CompanyEntry:
        if self.id is not None and (self.name or self.domain):
            raise ValueError("give a company's id, or its name and/or domain — not both")
        return self

    def for_enqueue(self) -> int | dict[str, Any]:
        return self.id if self.id is not None else {"name": self.name, "domain": self.domain}


class EnrichmentRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["enrichment"]
    tenant: TenantId | None = Field(default=None, description=TENANT_HELP)
    companies: list[CompanyEntry] = Field(
        min_length=1,
        max_length=10_000,
        description="ids of the tenant's companies, or {name, domain} objects",
    )
    options: EnrichmentFlags | None = None
    then: list[Literal["crm_sync", "export"]] = Field(
        default_factory=list, description="stages to run after it, in order"
    )


class CrmSyncRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["crm_sync"]
    tenant: TenantId | None = Field(default=None, description=TENANT_HELP)
    run_id: uuid.UUID = Field(description="the enrichment run whose contacts to push")
    then: list[Literal["export"]] = Field(default_factory=list)


class ExportRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["export"]
    tenant: TenantId | None = Field(default=None, description=TENANT_HELP)
    run_id: uuid.UUID = Field(description="the enrichment run whose companies to export")


RunRequest = Annotated[
    EnrichmentRunRequest | CrmSyncRunRequest | ExportRunRequest, Field(discriminator="kind")
]
run_request = JsonBody(
    RunRequest,
    examples=[{"kind": "enrichment", "companies": [{"name": "Acme", "domain": "acme.com"}]}],
)


# -- what it gets back -----------------------------------------------------------------------


class RunAccepted(BaseModel):
    run_id: uuid.UUID
    kind: RunKind
    tenant_id: int
    status: RunStatus = RunStatus.PENDING


# -- the endpoints ---------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    response_model=RunAccepted,
    responses=keyed(404, 408, 422),
    openapi_extra=run_request.openapi,
)
def enqueue_run(
    caller: AnyCaller,  # first: a caller without a valid key is refused before the body is read
    body: Annotated[RunRequest, Depends(run_request)],
    request: Request,
    response: Response,
) -> RunAccepted:
    """Start a run; it is handed to the workers and its id returned at once (202, with
    `Location: /runs/{id}`). Bad input is 422 naming what was wrong; a source run the
    caller cannot see is 404; the broker down is 503 (the run is then recorded failed)."""
    tenant = caller.tenant_scope(body.tenant)
    if tenant is None:
        raise invalid_field("body.tenant", "required with an admin key")
    try:
        run_id = _enqueue(body, tenant, request.state.correlation_id)
    except InputError as exc:  # what only the enqueue can check (repeats, unknown ids)
        raise located(exc, f"body.{body.kind}") from None
    response.headers["Location"] = f"/runs/{run_id}"
    return RunAccepted(run_id=run_id, kind=RunKind(body.kind), tenant_id=tenant)


def _enqueue(
    body: EnrichmentRunRequest | CrmSyncRunRequest | ExportRunRequest, tenant: int, cid: str
) -> uuid.UUID:
    if isinstance(body, EnrichmentRunRequest):
        companies = [company.for_enqueue() for company in body.companies]
        options = body.options.model_dump(exclude_none=True) if body.options else None
        return enqueue.enqueue_enrichment(
            tenant, companies, options=options, then=body.then, correlation_id=cid
        )
    source = runs.get_run(body.run_id)
    if source is None or source.run.tenant_id != tenant:
        raise NotFoundError("no run with this id", details={"field": "body.run_id"})
    try:
        if isinstance(body, CrmSyncRunRequest):
            return enqueue.enqueue_crm_sync(
                tenant, run_id=body.run_id, then=body.then, correlation_id=cid
            )
        return enqueue.enqueue_export(tenant, run_id=body.run_id, correlation_id=cid)
    except InputError as exc:  # nothing to sync or export: about the run given
        raise invalid_field("run_id", exc.message) from None


@router.get("", response_model=RunPage, responses=keyed(404, 422))
def list_runs(
    caller: AnyCaller,
    tenant: TenantQuery = None,
    status: RunStatus | None = None,
    kind: RunKind | None = None,
    limit: PageLimit = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RunPage:
    """Runs newest first. An admin key without `tenant` lists every tenant's runs."""
    found = runs.list_runs(
        tenant_id=caller.tenant_scope(tenant),
        status=status,
        kind=kind,
        limit=limit,
        before=_read_cursor(cursor) if cursor else None,
    )
    last = found[-1] if len(found) == limit else None
    healed = healed_counts(run.id for run in found)
    return RunPage(
        runs=[run_summary(run, healed=healed.get(run.id, 0)) for run in found],
        next_cursor=_cursor(last.created_at, last.id) if last else None,
    )


@router.get("/{run_id}", response_model=RunDetail, responses=keyed(404, 422))
def get_run(run_id: uuid.UUID, caller: AnyCaller) -> RunDetail:
    """A run with its items: each item's status, degradation reasons and attempts, what
    healed and when (its reasons before are in its `history`), what it still waits for."""
    view = runs.get_run(run_id)
    if view is None or not caller.sees(view.run.tenant_id):
        raise NotFoundError("no run with this id", details={"field": "path.run_id"})
    return run_detail(with_deferrals(view))


class ReplayStarted(BaseModel):
    run_id: uuid.UUID
    items_reopened: int = Field(description="dead or failed items sent again (0: none left)")


@router.post(
    "/{run_id}/replay", status_code=202, response_model=ReplayStarted, responses=keyed(404, 422)
)
def replay_run(run_id: uuid.UUID, caller: AnyCaller) -> ReplayStarted:
    """Re-run the run's dead and failed items (not those that succeeded); the run opens
    again and its status and counts are recomputed when they finish."""
    reopened = replay.replay_run(run_id, tenant_id=caller.tenant_scope(None))
    return ReplayStarted(run_id=run_id, items_reopened=reopened)


def _cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def _read_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(run_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_field("query.cursor", "not a cursor from this API") from None
