"""ERP export end to end: real worker, Postgres, Redis and the simulator's Odoo-like ERP."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import enqueue_export
from pipeline.errors import (
    CircuitOpenError,
    InputError,
    VendorAuthError,
    VendorClientError,
    VendorServerError,
)
from pipeline.simulator import Simulator
from pipeline.vendors.erp import ErpDatabaseMissingError, ErpFieldRejectedError
from tasks.export import disables_export, tenant_lease
from tests.support.erp import enriched
from tests.support.processes import Worker, wait_until
from tests.support.runs import finished, reasons

pytestmark = pytest.mark.usefixtures("worker")


def test_export_writes_each_partner_once_even_when_run_again(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    first = finished(enqueue_export(tenant, run_id=source.run.id))
    assert first.run.status == "succeeded", reasons(first)
    assert first.run.parent_run_id == source.run.id
    assert len(simulator.erp_partners(tenant)) == 3
    again = finished(enqueue_export(tenant, run_id=source.run.id))
    assert again.run.status == "succeeded"
    partners = simulator.erp_partners(tenant)
    assert len(partners) == 3, "a repeated export updates, it never duplicates"
    assert {p["ref"] for p in partners} == {
        f"pipeline:{tenant}:{i.item_key.split(':')[1]}" for i in source.items
    }


def test_a_refused_field_is_stripped_and_the_write_tried_once_more(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    simulator.set_fault(vendor="erp", tenant=tenant, erp_reject_fields=["autopost_bills"])
    view = finished(enqueue_export(tenant, run_id=source.run.id))
    assert reasons(view) == [["EXPORT_FIELDS_STRIPPED:autopost_bills+website"]] * 3
    assert view.run.status == "degraded"
    partners = simulator.erp_partners(tenant)
    assert len(partners) == 3
    assert not any("autopost_bills" in p or "website" in p for p in partners)


def test_an_unreachable_erp_disables_the_export_and_the_run_ends_degraded(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant)
    simulator.set_fault(vendor="erp", tenant=tenant, down=True, status=503)
    view = finished(enqueue_export(tenant, run_id=source.run.id))
    assert view.run.export_disabled and view.run.export_disabled_reason
    assert view.run.status == "degraded"
    assert reasons(view) == [["EXPORT_DISABLED:RETRIES_EXHAUSTED"]] * 3


def test_a_missing_erp_database_disables_the_export(simulator: Simulator, tenant: int) -> None:
    source = enriched(simulator, tenant, db="no_such_db")
    view = finished(enqueue_export(tenant, run_id=source.run.id))
    assert view.run.export_disabled
    assert reasons(view) == [["EXPORT_DISABLED:ERP_DB_MISSING"]] * 3
    assert simulator.erp_partners(tenant) == []


def test_exporting_someone_elses_or_an_unknown_run_is_refused(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant, n=1)
    with pytest.raises(InputError, match="has no run"):
        enqueue_export(tenant + 1, run_id=source.run.id)
    with pytest.raises(InputError, match="not a run id"):
        enqueue_export(tenant, run_id="nope")


def test_an_erp_that_goes_down_mid_run_disables_the_rest_and_keeps_what_was_written(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant, n=4)
    # authenticate, then find + create per partner: the ERP fails from the third partner on
    simulator.set_fault(vendor="erp", tenant=tenant, status=503, skip=1 + 2 * 2)
    view = finished(enqueue_export(tenant, run_id=source.run.id))
    assert view.run.export_disabled and view.run.status == "degraded"
    disabled = ("EXPORT_DISABLED:RETRIES_EXHAUSTED",)
    assert sorted(map(tuple, reasons(view))) == [(), (), disabled, disabled]
    assert len(simulator.erp_partners(tenant)) == 2


@pytest.mark.parametrize(
    ("error", "disables"),
    [
        (VendorAuthError("login refused", vendor="erp"), True),
        (ErpDatabaseMissingError("no db", vendor="erp"), True),
        (CircuitOpenError("open", vendor="erp"), True),
        (VendorServerError("503", vendor="erp"), True),
        (InputError("no erp credential"), True),
        (VendorClientError("one bad record", vendor="erp"), False),
        (ErpFieldRejectedError("website", vendor="erp", field="website"), False),
    ],
)
def test_what_disables_the_export_is_the_same_at_start_and_mid_run(
    error: Exception, disables: bool
) -> None:
    assert disables_export(error) is disables  # type: ignore[arg-type]


def test_one_export_per_tenant_writes_at_a_time(tenant: int) -> None:
    with (
        tenant_lease(tenant) as first,
        tenant_lease(tenant) as second,
        tenant_lease(tenant + 1) as other_tenant,
    ):
        assert first is not None and second is None and other_tenant is not None
    with tenant_lease(tenant) as again:
        assert again is not None, "released when the export ended"


def test_a_repeated_delivery_of_a_finished_export_does_not_touch_the_erp(
    simulator: Simulator, tenant: int, celery_app: Any, worker: Worker
) -> None:
    source = enriched(simulator, tenant, n=1)
    export = finished(enqueue_export(tenant, run_id=source.run.id))
    calls = simulator.stats()["calls"]["erp"][str(tenant)]
    again = celery_app.send_task("tasks.export.export_run", args=[str(export.run.id)])
    refusal = f'"run_id": "{export.run.id}", "why": "nothing to do", "event": "run_task.refused"'
    wait_until(
        lambda: refusal in worker.log_text() and f"[{again.id}] ignored" in worker.log_text(),
        what="the repeated delivery to be refused",
    )
    assert simulator.stats()["calls"]["erp"][str(tenant)] == calls, "no login, no write"
    assert finished(export.run.id).run.status == "succeeded" and not export.run.export_disabled
