"""`/dead-letters`, `POST /runs/{id}/replay` and `/metrics` through the real app."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.api_keys import create_api_key
from pipeline.simulator import Simulator
from tests.support.api import assert_error, finished_run
from tests.support.crm import enriched, external_ids
from tests.support.dead_letters import entry_for, fetch
from tests.support.vendor_stub import VendorStub

pytestmark = pytest.mark.usefixtures("worker")


def test_a_tenant_reads_and_replays_its_own_dead_letters_only(
    api: Any,
    celery_app: Any,
    stub: VendorStub,
    tenant: int,
    tenant_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    entry = entry_for(fetch(celery_app, stub.script(f"api-{tenant}", [400, 200]), tenant).id)
    other, _ = create_api_key(tenant_id=tenant + 1)
    stranger = {"X-API-Key": other}

    page = api.get("/dead-letters", headers=tenant_headers).json()
    assert [e["id"] for e in page["dead_letters"]] == [entry.id]
    assert page["dead_letters"][0]["error_code"] == "CLIENT_ERROR"
    assert api.get("/dead-letters", headers=stranger).json()["dead_letters"] == []
    assert_error(api.get(f"/dead-letters/{entry.id}", headers=stranger), 404, "NOT_FOUND")
    assert_error(api.post(f"/dead-letters/{entry.id}/replay", headers=stranger), 404, "NOT_FOUND")
    assert_error(api.get("/dead-letters"), 401, "UNAUTHORIZED")
    bad = assert_error(
        api.get("/dead-letters?status=sleeping", headers=tenant_headers), 422, "INVALID_INPUT"
    )
    assert [e["field"] for e in bad["details"]["errors"]] == ["query.status"]

    detail = api.get(f"/dead-letters/{entry.id}", headers=tenant_headers).json()
    assert detail["kwargs"] == {"tenant_id": tenant, "vendor": "crawler"}
    assert detail["traceback"] is None, "our code's insides are for operators"
    admin = api.get(f"/dead-letters/{entry.id}", headers=admin_headers).json()
    assert "VendorClientError" in admin["traceback"]

    replayed = api.post(f"/dead-letters/{entry.id}/replay", headers=tenant_headers)
    assert replayed.status_code == 202
    task_id = replayed.json()["replay_task_id"]
    assert celery_app.AsyncResult(task_id).get(timeout=30)["status"] == 200
    assert_error(
        api.post(f"/dead-letters/{entry.id}/replay", headers=tenant_headers),
        409,
        "ALREADY_REPLAYED",
    )
    after = api.get(f"/dead-letters/{entry.id}", headers=tenant_headers).json()
    assert (after["status"], after["replay_task_id"]) == ("replayed", task_id)


def test_replaying_a_run_over_http_redoes_its_failed_items(
    api: Any, simulator: Simulator, tenant: int, tenant_headers: dict[str, str]
) -> None:
    source = enriched(simulator, tenant, n=2)
    simulator.set_fault(
        vendor="crm", tenant=tenant, reject_records=external_ids(tenant, source)[:1]
    )
    sync = api.post(
        "/runs", json={"kind": "crm_sync", "run_id": str(source.run.id)}, headers=tenant_headers
    ).json()["run_id"]
    assert finished_run(api, tenant_headers, sync)["status"] == "degraded"
    simulator.clear_faults()

    other, _ = create_api_key(tenant_id=tenant + 1)
    assert_error(api.post(f"/runs/{sync}/replay", headers={"X-API-Key": other}), 404, "NOT_FOUND")
    started = api.post(f"/runs/{sync}/replay", headers=tenant_headers)
    assert started.status_code == 202 and started.json()["items_reopened"] == 1
    done = finished_run(api, tenant_headers, sync)
    assert done["status"] == "succeeded" and done["items_failed"] == 0


def test_metrics_are_for_admins(
    api: Any, admin_headers: dict[str, str], tenant_headers: dict[str, str]
) -> None:
    scraped = api.get("/metrics", headers=admin_headers)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert "# TYPE pipeline_breaker_state gauge" in scraped.text
    assert_error(api.get("/metrics", headers=tenant_headers), 403, "FORBIDDEN")
