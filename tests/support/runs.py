"""Runs as tests start, wait for and read them: companies to enrich, finished runs, stages."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select

from pipeline import runs
from pipeline.companies import CompanyRef, upsert_companies
from pipeline.db.engine import session_scope
from pipeline.db.models import FINISHED_RUN_STATUSES, Run, RunItem, RunKind
from pipeline.enqueue import EnrichmentOptions
from pipeline.simulator import Simulator
from tests.support.processes import wait_until

TERMINAL_RUN = set(FINISHED_RUN_STATUSES)


def finished(run_id: uuid.UUID, timeout: float = 60) -> runs.RunView:
    def done() -> runs.RunView | None:
        view = runs.get_run(run_id)
        return view if view and view.run.status in TERMINAL_RUN else None

    return wait_until(done, timeout=timeout, interval=0.1, what=f"run {run_id} to finish")


def reasons(view: runs.RunView) -> list[list[str]]:
    return [[r for r in item.degraded_reasons.split(",") if r] for item in view.items]


def calls(sim: Simulator, vendor: str, tenant: int) -> int:
    return int(sim.stats()["calls"].get(vendor, {}).get(str(tenant), 0))


def company(n: int, tenant: int) -> dict[str, str]:
    return {"name": f"Company {n}", "domain": f"company-{n}-{tenant}.com"}


def stages_of(first: uuid.UUID, count: int) -> dict[str, Run]:
    """The pipeline's `count` later stages once all have closed; a duplicate stage fails."""

    def look() -> dict[str, Run] | None:
        with session_scope() as session:
            found = session.scalars(select(Run).where(Run.parent_run_id == first)).all()
        kinds = [run.kind for run in found]
        assert len(kinds) == len(set(kinds)) <= count, f"stages started more than once: {kinds}"
        done = {run.kind: run for run in found if run.status in TERMINAL_RUN}
        return done if len(done) == count else None

    return wait_until(look, timeout=90, interval=0.2, what=f"{count} stages after {first}")


def delete_runs_of(*tenants: int) -> None:
    with session_scope() as session:
        session.execute(delete(Run).where(Run.tenant_id.in_(tenants)))


def unsent_run(tenant: int, n: int) -> tuple[uuid.UUID, list[RunItem]]:
    """An enrichment run recorded as `enqueue_enrichment` records it — whose message never
    reached a worker."""
    ids = upsert_companies(
        tenant,
        [
            CompanyRef(None, c["name"], c["domain"])
            for c in map(lambda i: company(i, tenant), range(n))
        ],
    )
    options = {**EnrichmentOptions.resolve(None).model_dump(), "then": []}
    run_id = runs.create_run(
        tenant, RunKind.ENRICHMENT, [f"company:{i}" for i in ids], options=options
    )
    view = runs.get_run(run_id)
    assert view is not None
    return run_id, view.items
