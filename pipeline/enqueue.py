"""How a web app starts jobs: validate, record the run, hand it to the workers, return.

    from pipeline import enqueue_enrichment
    run_id = enqueue_enrichment(42, [{"name": "Acme", "domain": "acme.com"}, 1017])

Returns at once with the run id; the work happens in Celery workers. Bad input raises
`InputError` naming what was wrong, before anything is written. A company given with neither
name nor domain is not an error of the request: it becomes an item that fails with reason
`DATA_EMPTY:no_domain_name`, so the caller sees it in the run like any other outcome.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline import runs
from pipeline.companies import CompanyRef, companies_by_id, upsert_companies
from pipeline.correlation import current_correlation_id
from pipeline.db.models import ItemStatus, RunKind
from pipeline.errors import DependencyUnavailableError, InputError
from pipeline.settings import get_settings
from pipeline.storable import Storable

log = structlog.get_logger(__name__)


# Labels of letters (any script), digits, `-` or `_`, at least two: `acme.com`, `bücher.de`.
_HOST_NAME = re.compile(r"[\w-]+(\.[\w-]+)+")


class CompanyInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, Field(max_length=255), Storable()] | None = None
    domain: Annotated[str, Field(max_length=255), Storable()] | None = None

    @field_validator("name", "domain", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """Empty or whitespace only: not given (a company with neither is `DATA_EMPTY`)."""
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("domain")
    @classmethod
    def _bare_domain(cls, value: str | None) -> str | None:
        """'https://www.Acme.com:443/about' → 'acme.com'; the message never holds the value."""
        if value is None:
            return None
        host = value.lower().split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
        host = host.split(":", 1)[0]  # a port
        host = host.removeprefix("www.")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError("not a domain (e.g. acme.com)")
        return host


class EnrichmentOptions(BaseModel):
    """The spec's feature flags for one run; unset ones come from settings."""

    model_config = ConfigDict(extra="forbid")

    enable_tavily_fallback: bool
    enable_apify_linkedin: bool
    enable_lusha_fallback: bool

    @classmethod
    def resolve(cls, overrides: dict[str, Any] | None) -> EnrichmentOptions:
        if overrides is not None and not isinstance(overrides, dict):
            raise InputError(f"options must be a dict of flags, got {type(overrides).__name__}")
        settings = get_settings()
        defaults = {name: getattr(settings, name) for name in cls.model_fields}
        try:
            return cls(**{**defaults, **(overrides or {})})
        except ValidationError as exc:
            names = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise InputError(f"bad options: {names}") from None


MAX_TENANT_ID = 2**63 - 1  # the tenant columns are BIGINT


STAGES = ("crm_sync", "export")


def check_stages(then: Sequence[str]) -> list[str]:
    stages = [then] if isinstance(then, str) else list(then)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or len(set(stages)) != len(stages):
        expected = f"expected some of {', '.join(STAGES)}, each at most once"
        raise InputError(f"then: {expected}", details=_problem("then", expected))
    return stages


def check_tenant(tenant_id: Any) -> int:
    if (
        isinstance(tenant_id, bool)
        or not isinstance(tenant_id, int)
        or not 0 < tenant_id <= MAX_TENANT_ID
    ):
        raise InputError(
            f"tenant must be a positive integer (at most {MAX_TENANT_ID})",
            details=_problem("tenant", "must be a positive integer"),
        )
    return tenant_id


def parse_companies(companies: Iterable[int | dict[str, Any]]) -> list[int | CompanyInput]:
    parsed: list[int | CompanyInput] = []
    for index, company in enumerate(companies):
        if isinstance(company, int) and not isinstance(company, bool):
            if not 0 < company <= MAX_TENANT_ID:  # ids are BIGINT too
                raise InputError(
                    f"company #{index + 1}: not a company id (a positive integer)",
                    details=_problem(f"companies.{index}", "not a company id"),
                )
            parsed.append(company)
            continue
        if not isinstance(company, dict):
            raise InputError(
                f"company #{index + 1}: expected an id or a dict, got {type(company).__name__}",
                details=_problem(f"companies.{index}", "expected an id or a dict"),
            )
        try:
            parsed.append(CompanyInput(**company))
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(str(p) for p in ("companies", index, *e["loc"])),
                    "message": str(e["msg"]).removeprefix("Value error, "),
                    "type": e["type"],
                }
                for e in exc.errors(include_input=False, include_url=False)
            ]
            problems = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InputError(
                f"company #{index + 1}: {problems}", details={"errors": errors}
            ) from None
    if not parsed:
        raise InputError("no companies given", details=_problem("companies", "no companies given"))
    seen: dict[Any, int] = {}
    for index, entry in enumerate(parsed):
        key = entry if isinstance(entry, int) else (entry.domain or entry.name or None)
        if key is None:
            continue
        if key in seen:  # one item per company given: a repeat would silently vanish
            raise InputError(
                f"company #{index + 1} repeats company #{seen[key] + 1}",
                details=_problem(f"companies.{index}", f"repeats companies.{seen[key]}"),
            )
        seen[key] = index
    return parsed


def _error(field: str, message: str) -> dict[str, str]:
    """One entry of `InputError.details["errors"]`: the field (relative to the arguments,
    e.g. `companies.2.domain`), what is wrong with it, and never the value given."""
    return {"field": field, "message": message, "type": "value_error"}


def _problem(field: str, message: str) -> dict[str, Any]:
    return {"errors": [_error(field, message)]}


def enqueue_enrichment(
    tenant_id: int,
    companies: Sequence[int | dict[str, Any]],
    *,
    options: dict[str, Any] | None = None,
    then: Sequence[str] = (),
    correlation_id: str | None = None,
) -> uuid.UUID:
    """Start an enrichment run over `companies` (ids of the tenant's companies, or dicts with
    `name` and/or `domain`) and return its id at once. `options` override the feature flags
    (`enable_tavily_fallback`, `enable_apify_linkedin`, `enable_lusha_fallback`) for this run.
    `then` names stages to run after it, in order (`crm_sync`, `export`): each becomes a run
    of its own, linked to this one; a degraded stage lets the next start, a failed one not."""
    tenant = check_tenant(tenant_id)
    flags = EnrichmentOptions.resolve(options)
    stages = check_stages(then)
    parsed = parse_companies(companies)
    ids = [c for c in parsed if isinstance(c, int)]
    known = companies_by_id(tenant, ids)
    missing = [i for i, c in enumerate(parsed) if isinstance(c, int) and c not in known]
    if missing:
        numbers = ", ".join(f"#{i + 1}" for i in missing)
        raise InputError(
            f"no company of tenant {tenant} has the id given as company {numbers}",
            details={
                "errors": [
                    _error(f"companies.{i}", "no company of this tenant has this id")
                    for i in missing
                ]
            },
        )

    given = [c for c in parsed if isinstance(c, CompanyInput) and (c.name or c.domain)]
    new_ids = iter(upsert_companies(tenant, [CompanyRef(None, c.name, c.domain) for c in given]))
    keys = []
    for index, company in enumerate(parsed):
        if isinstance(company, int):
            keys.append(f"company:{company}")
        elif company.name or company.domain:
            keys.append(f"company:{next(new_ids)}")
        else:
            keys.append(f"input:{index + 1}")

    cid = correlation_id or current_correlation_id() or uuid.uuid4().hex
    run_id = runs.create_run(
        tenant,
        RunKind.ENRICHMENT,
        keys,
        correlation_id=cid,
        options={**flags.model_dump(), "then": stages},
    )
    send_run(RunKind.ENRICHMENT, run_id, cid)
    return run_id


def enqueue_export(
    tenant_id: int,
    *,
    run_id: uuid.UUID | str,
    then: Sequence[str] = (),
    correlation_id: str | None = None,
    follows: uuid.UUID | None = None,
) -> uuid.UUID:
    """Export the companies an enrichment run processed to the tenant's ERP; returns the new
    export run's id at once (the export run's `parent_run_id` is the enrichment run)."""
    tenant, source = _source_run(tenant_id, run_id)
    keys = [f"company:{cid}" for cid in enriched_company_ids(source)]
    if not keys:
        raise InputError(f"run {source.run.id} has no enriched companies to export")
    return _start_stage(RunKind.EXPORT, tenant, source, keys, then, correlation_id, follows)


def enqueue_crm_sync(
    tenant_id: int,
    *,
    run_id: uuid.UUID | str,
    then: Sequence[str] = (),
    correlation_id: str | None = None,
    follows: uuid.UUID | None = None,
) -> uuid.UUID:
    """Push the contacts an enrichment run found to the tenant's CRM; returns the new sync
    run's id at once (its `parent_run_id` is the enrichment run)."""
    from pipeline.companies import contact_ids_of_companies

    tenant, source = _source_run(tenant_id, run_id)
    company_ids = enriched_company_ids(source)
    keys = [f"contact:{cid}" for cid in contact_ids_of_companies(tenant, company_ids)]
    if not keys:
        raise InputError(f"run {source.run.id} found no contacts to sync")
    return _start_stage(RunKind.CRM_SYNC, tenant, source, keys, then, correlation_id, follows)


def enriched_company_ids(source: runs.RunView) -> list[int]:
    """The companies an enrichment run processed (succeeded or degraded)."""
    processed = (ItemStatus.SUCCEEDED, ItemStatus.DEGRADED)
    return [
        int(item.item_key.split(":")[1])
        for item in source.items
        if item.item_key.startswith("company:") and item.status in processed
    ]


def _start_stage(
    kind: RunKind,
    tenant: int,
    source: runs.RunView,
    keys: list[str],
    then: Sequence[str],
    correlation_id: str | None,
    follows: uuid.UUID | None,
) -> uuid.UUID:
    """A run that works from an enrichment run (its parent), handed to the workers.

    As a pipeline's next stage (`follows` the run before it) it is created once however
    often this is called, and a broker that is down leaves it pending for
    `pipeline.stages.sweep_pipelines` to send again, rather than failing the pipeline."""
    cid = correlation_id or source.run.correlation_id or uuid.uuid4().hex
    stage_id = runs.create_run(
        tenant,
        kind,
        keys,
        correlation_id=cid,
        parent_run_id=source.run.id,
        options={"then": check_stages(then)},
        follows_run_id=follows,
    )
    if follows is not None and runs.was_sent(stage_id):
        return stage_id  # this stage was started before: once is enough
    send_run(kind, stage_id, cid, fail_if_unsent=follows is None)
    return stage_id


def _source_run(tenant_id: int, run_id: uuid.UUID | str) -> tuple[int, runs.RunView]:
    tenant = check_tenant(tenant_id)
    source_id = runs.run_id_from(run_id)
    source = runs.get_run(source_id)
    if source is None or source.run.tenant_id != tenant:
        raise InputError(f"tenant {tenant} has no run {source_id}")
    return tenant, source


# The task that works through a run of each kind, given the run id.
RUN_TASKS = {
    RunKind.ENRICHMENT: "tasks.enrichment.start_run",
    RunKind.CRM_SYNC: "tasks.crm_sync.sync_run",
    RunKind.EXPORT: "tasks.export.export_run",
}


def send_run(
    kind: RunKind | str,
    run_id: uuid.UUID,
    correlation_id: str,
    *,
    fail_if_unsent: bool = True,
    task_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Hand a run to the workers; the task id. A broker that is down raises
    `DependencyUnavailableError` and (unless told otherwise) fails the run, so it is never
    silently lost. A sent run records `sent_at` (the sweeper re-sends only unsent ones)."""
    from workers.app import app

    try:
        sent = app.send_task(
            RUN_TASKS[RunKind(kind)],
            args=[str(run_id)],
            task_id=task_id,
            headers={**(headers or {}), "x_correlation_id": correlation_id},
        )
    except Exception as exc:
        if fail_if_unsent:
            runs.fail_unstarted(run_id, "ENQUEUE_FAILED")
        raise DependencyUnavailableError(
            f"the broker is unreachable ({type(exc).__name__}); run {run_id} "
            + ("marked failed" if fail_if_unsent else "left pending, to be sent again")
        ) from None
    try:
        runs.mark_sent(run_id)
    except Exception as exc:  # it is on the broker: the worst case is one needless re-send
        log.warning("run.sent_not_recorded", run_id=str(run_id), error=type(exc).__name__)
    return str(sent.id)
