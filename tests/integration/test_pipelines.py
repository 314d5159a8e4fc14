"""Chained jobs: enrichment → CRM sync → ERP export, each its own run linked to the first."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from pipeline import enqueue_enrichment, runs
from pipeline.credentials import put_credential
from pipeline.db.engine import session_scope
from pipeline.db.models import Run, RunKind, utcnow
from pipeline.errors import InputError
from pipeline.simulator import Simulator
from pipeline.stages import start_next_stage, sweep_pipelines
from tests.support.processes import wait_until
from tests.support.runs import company, finished, stages_of
from tests.support.tenants import ready_tenant

pytestmark = pytest.mark.usefixtures("worker")


def test_enrichment_then_crm_sync_then_export(simulator: Simulator, tenant: int) -> None:
    ready_tenant(simulator, tenant)
    first = enqueue_enrichment(
        tenant, [company(i, tenant) for i in range(3)], then=["crm_sync", "export"]
    )
    assert finished(first).run.status == "succeeded"
    stages = stages_of(first, 2)
    assert stages["crm_sync"].status == "succeeded"
    assert stages["export"].status == "succeeded"
    assert len(simulator.erp_partners(tenant)) == 3
    assert len(simulator.crm_contacts(tenant)) == stages["crm_sync"].items_total


def test_a_degraded_stage_lets_the_next_one_run(simulator: Simulator, tenant: int) -> None:
    ready_tenant(simulator, tenant)
    simulator.set_fault(vendor="crawler", tenant=tenant, thin=True)  # enrichment degraded
    simulator.set_fault(vendor="erp", tenant=tenant, down=True, status=503)  # export disabled
    first = enqueue_enrichment(tenant, [company(1, tenant)], then=["crm_sync", "export"])
    assert finished(first).run.status == "degraded"
    stages = stages_of(first, 2)
    assert stages["crm_sync"].status == "succeeded"
    assert stages["export"].export_disabled and stages["export"].status == "degraded"


def test_a_failed_stage_stops_the_pipeline_and_says_so(simulator: Simulator, tenant: int) -> None:
    ready_tenant(simulator, tenant)
    put_credential(tenant, "crm", {"client_id": f"c-{tenant}", "client_secret": "wrong"})
    first = enqueue_enrichment(tenant, [company(1, tenant)], then=["crm_sync", "export"])
    finished(first)
    sync = stages_of(first, 1)["crm_sync"]
    assert sync.status == "failed"

    def stop_noted() -> str | None:
        reasons = finished(sync.id).run.degraded_reasons or ""
        return reasons if "PIPELINE_STOPPED" in reasons else None

    reasons = wait_until(stop_noted, what="the stop to be noted")
    assert "PIPELINE_STOPPED:crm_sync_failed" in reasons
    assert simulator.erp_partners(tenant) == []


def test_unknown_stages_are_refused(tenant: int) -> None:
    with pytest.raises(InputError, match="then"):
        enqueue_enrichment(tenant, [company(1, tenant)], then=["crm_sync", "fax"])


def lose_the_handoff(run_id: uuid.UUID, then: list[str]) -> None:
    """As if the process that closed the run died before it could start the next stage."""
    with session_scope() as session:
        run = session.get_one(Run, run_id)
        run.options = {**run.options, "then": then}
        run.handed_off_at = None
        run.finished_at = utcnow() - timedelta(minutes=5)


def test_the_sweeper_starts_a_stage_whose_hand_off_was_lost_and_only_once(
    simulator: Simulator, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    first = enqueue_enrichment(tenant, [company(i, tenant) for i in range(2)])
    finished(first)
    lose_the_handoff(first, ["crm_sync"])
    assert sweep_pipelines(tenant_id=tenant) == 1
    assert stages_of(first, 1)["crm_sync"].status == "succeeded"
    assert sweep_pipelines(tenant_id=tenant) == 0, "handed off now"
    start_next_stage(first)  # the closing process's hook, late
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == first).values(handed_off_at=None))
    start_next_stage(first)  # even with the mark gone, a stage follows a run once
    assert len(stages_of(first, 1)) == 1
    assert simulator.stats()["duplicate_idempotency_keys"].get(str(tenant), 0) == 0


def test_the_sweeper_sends_a_stage_that_was_created_but_never_sent(
    simulator: Simulator, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    first = enqueue_enrichment(tenant, [company(1, tenant)])
    source = finished(first)
    keys = [f"company:{i.item_key.split(':')[1]}" for i in source.items]
    stage = runs.create_run(tenant, RunKind.EXPORT, keys, parent_run_id=first, follows_run_id=first)
    assert sweep_pipelines(tenant_id=tenant) == 0, "too fresh: it may still be on its way"
    with session_scope() as session:
        session.execute(
            update(Run).where(Run.id == stage).values(created_at=utcnow() - timedelta(minutes=5))
        )
    assert sweep_pipelines(tenant_id=tenant) == 1
    assert finished(stage).run.status == "succeeded"
    assert len(simulator.erp_partners(tenant)) == 1
