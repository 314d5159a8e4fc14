"""`/runs` through the real app: real Postgres, Redis, broker, worker processes, simulator."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import event

from pipeline.api_keys import create_api_key, revoke_api_key
from pipeline.db.models import DeferralStatus, ItemStatus
from pipeline.simulator import Simulator
from tests.support.api import assert_error, enrich, finished_run
from tests.support.processes import Worker, wait_until
from tests.support.runs import company
from tests.support.seeded_runs import (
    SECRET,
    aftercare_run,
    at,
    defer,
    healed_history,
    seeded_run,
    with_secrets,
    write_item,
)
from tests.support.stack import environment
from tests.support.tenants import ready_tenant


@pytest.mark.usefixtures("worker")
def test_an_enrichment_posted_is_run_by_a_worker_and_read_back_with_reasons(
    api: Any, tenant_headers: dict[str, str], simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, thin=True)
    response = enrich(api, tenant_headers, [company(1, tenant), {"name": "", "domain": ""}])

    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.headers["Location"] == f"/runs/{run_id}"
    assert response.json()["tenant_id"] == tenant

    run = finished_run(api, tenant_headers, run_id)
    assert run["status"] == "degraded" and run["kind"] == "enrichment"
    assert (run["items_total"], run["items_failed"]) == (2, 1)
    assert [item["status"] for item in run["items"]] == ["degraded", "failed"]
    assert "CRAWL_THIN" in run["items"][0]["degraded_reasons"]
    assert run["items"][1]["degraded_reasons"] == ["DATA_EMPTY:no_domain_name"]
    assert "CRAWL_THIN" in run["degraded_reasons"]
    assert run["vendor_stats"]["crawler"]["calls"] == 1


@pytest.mark.usefixtures("worker")
def test_the_correlation_id_sent_comes_back_and_reaches_the_tasks_log_lines(
    api: Any, tenant_headers: dict[str, str], worker: Worker, tenant: int
) -> None:
    cid = f"web-{uuid.uuid4().hex}"
    response = enrich(api, {**tenant_headers, "X-Correlation-ID": cid}, [company(1, tenant)])
    assert response.headers["X-Correlation-ID"] == cid
    run = finished_run(api, tenant_headers, response.json()["run_id"])
    assert run["correlation_id"] == cid

    def task_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in worker.log_text().splitlines() if cid in line]
        return [line for line in lines if line.get("task", "").startswith("tasks.enrichment.")]

    lines = wait_until(task_lines, what="the run's task log lines")
    assert {line["correlation_id"] for line in lines} == {cid}
    assert {line["task"] for line in lines} >= {"tasks.enrichment.start_run"}


def test_a_correlation_id_unfit_to_carry_is_replaced(api: Any) -> None:
    response = api.get("/health", headers={"X-Correlation-ID": "x" * 65})
    assert response.headers["X-Correlation-ID"] not in ("", "x" * 65)


@pytest.mark.usefixtures("worker")
def test_crm_sync_and_export_are_enqueued_from_an_enrichment_run(
    api: Any, tenant_headers: dict[str, str], simulator: Simulator, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    first = enrich(api, tenant_headers, [company(n, tenant) for n in range(2)]).json()["run_id"]
    assert finished_run(api, tenant_headers, first)["status"] == "succeeded"

    for kind in ("crm_sync", "export"):
        response = api.post("/runs", json={"kind": kind, "run_id": first}, headers=tenant_headers)
        assert response.status_code == 202, response.text
        run = finished_run(api, tenant_headers, response.json()["run_id"])
        assert (run["kind"], run["status"], run["parent_run_id"]) == (kind, "succeeded", first)
    assert len(simulator.erp_partners(tenant)) == 2


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"kind": "enrichment"}, ["body.enrichment.companies"]),
        ({"kind": "enrichment", "companies": []}, ["body.enrichment.companies"]),
        (
            {"kind": "enrichment", "companies": [{"domain": "not a domain"}, "acme"]},
            ["body.enrichment.companies.0.domain", "body.enrichment.companies.1"],
        ),
        (
            {"kind": "enrichment", "companies": [1], "then": ["fax"], "options": {"x": True}},
            ["body.enrichment.options.x", "body.enrichment.then.0"],
        ),
        ({"kind": "crm_sync", "run_id": "nope"}, ["body.crm_sync.run_id"]),
        ({"kind": "replay"}, ["body"]),
        ({"companies": [1]}, ["body"]),
    ],
    ids=[
        "no-companies",
        "empty",
        "bad-companies",
        "bad-flags-and-stage",
        "bad-run-id",
        "unknown-kind",
        "no-kind",
    ],
)
def test_a_bad_body_is_422_naming_the_fields(
    api: Any, tenant_headers: dict[str, str], body: dict[str, Any], fields: list[str]
) -> None:
    error = assert_error(api.post("/runs", json=body, headers=tenant_headers), 422, "INVALID_INPUT")
    named = [e["field"] for e in error["details"]["errors"]]
    assert named == fields
    for field in fields:
        assert field in error["message"]


def test_an_admin_must_name_the_tenant(api: Any, admin_headers: dict[str, str]) -> None:
    error = assert_error(enrich(api, admin_headers, [{"domain": "acme.com"}]), 422, "INVALID_INPUT")
    assert error["details"]["errors"][0]["field"] == "body.tenant"


def test_input_the_enqueue_refuses_is_422_with_its_message(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    repeated = [company(1, tenant), company(1, tenant)]
    error = assert_error(enrich(api, tenant_headers, repeated), 422, "INVALID_INPUT")
    assert "company #2 repeats company #1" in error["message"]
    assert error["details"]["errors"] == [
        {
            "field": "body.enrichment.companies.1",
            "message": "repeats companies.0",
            "type": "value_error",
        }
    ]
    assert company(1, tenant)["domain"] not in error["message"], "no value echoed"

    unknown = [{"name": "Known"}, 987654321, 987654322]
    error = assert_error(enrich(api, tenant_headers, unknown), 422, "INVALID_INPUT")
    assert "company #2, #3" in error["message"] and "987654321" not in error["message"]
    assert [e["field"] for e in error["details"]["errors"]] == [
        "body.enrichment.companies.1",
        "body.enrichment.companies.2",
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "pk_0123456789ab_wrong"}, {"X-API-Key": "garbage"}],
    ids=["no-key", "unknown-key", "malformed-key"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/runs"), ("POST", "/runs"), ("GET", f"/runs/{uuid.uuid4()}")],
)
def test_no_valid_key_is_401(api: Any, headers: dict[str, str], method: str, path: str) -> None:
    response = api.request(method, path, headers=headers, json={"kind": "enrichment"})
    body = assert_error(response, 401, "UNAUTHORIZED")
    assert "pk_" not in body["message"], "the key given is never echoed"


def test_a_revoked_key_is_401_at_once_with_the_key_cache_off(api: Any, tenant: int) -> None:
    """(With `API_KEY_CACHE_S` on, within it: tests/integration/test_api_postgres_down.py.)"""
    with environment({"API_KEY_CACHE_S": "0"}):
        key, summary = create_api_key(tenant_id=tenant)
        assert api.get("/runs", headers={"X-API-Key": key}).status_code == 200
        revoke_api_key(summary.id)
        assert_error(api.get("/runs", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")


def test_another_tenants_runs_are_404_and_an_admin_sees_all(
    api: Any, tenant_headers: dict[str, str], admin_headers: dict[str, str], tenant: int
) -> None:
    other = tenant + 1
    other_key, _ = create_api_key(tenant_id=other)
    other_headers = {"X-API-Key": other_key}
    theirs = enrich(api, other_headers, [{"name": "Theirs"}]).json()["run_id"]
    mine = enrich(api, tenant_headers, [{"name": "Mine"}]).json()["run_id"]

    error = assert_error(api.get(f"/runs/{theirs}", headers=tenant_headers), 404, "NOT_FOUND")
    unknown = assert_error(
        api.get(f"/runs/{uuid.uuid4()}", headers=tenant_headers), 404, "NOT_FOUND"
    )
    assert error["message"].split()[:2] == unknown["message"].split()[:2] == ["no", "run"]
    assert_error(api.get(f"/runs?tenant={other}", headers=tenant_headers), 404, "NOT_FOUND")
    for kind in ("crm_sync", "export"):
        response = api.post("/runs", json={"kind": kind, "run_id": theirs}, headers=tenant_headers)
        assert_error(response, 404, "NOT_FOUND")
    assert_error(enrich(api, tenant_headers, [{"name": "x"}], tenant=other), 404, "NOT_FOUND")

    listed = api.get("/runs", headers=tenant_headers).json()["runs"]
    assert [run["id"] for run in listed] == [mine]
    assert api.get(f"/runs/{theirs}", headers=admin_headers).json()["tenant_id"] == other
    everyone = api.get("/runs?limit=200", headers=admin_headers).json()["runs"]
    assert {mine, theirs} <= {run["id"] for run in everyone}
    mine_only = api.get(f"/runs?tenant={tenant}", headers=admin_headers).json()["runs"]
    assert [run["id"] for run in mine_only] == [mine]


def test_runs_page_newest_first_by_cursor_and_filter(
    api: Any, admin_headers: dict[str, str]
) -> None:
    tenant = random.randint(10**9, 2 * 10**9)
    started = [
        enrich(api, admin_headers, [{"name": f"Company {n}"}], tenant=tenant).json()["run_id"]
        for n in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/runs?tenant={tenant}&kind=enrichment&limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = api.get(query, headers=admin_headers).json()
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == started[::-1]
    assert api.get(f"/runs?tenant={tenant}&kind=export", headers=admin_headers).json() == {
        "runs": [],
        "next_cursor": None,
    }
    statuses = {
        r["status"]
        for r in api.get(f"/runs?tenant={tenant}&status=failed", headers=admin_headers).json()[
            "runs"
        ]
    }
    assert statuses <= {"failed"}

    error = assert_error(
        api.get("/runs?status=lost&limit=0", headers=admin_headers), 422, "INVALID_INPUT"
    )
    assert [e["field"] for e in error["details"]["errors"]] == ["query.status", "query.limit"]
    error = assert_error(api.get("/runs?cursor=%%%", headers=admin_headers), 422, "INVALID_INPUT")
    assert error["details"]["errors"][0]["field"] == "query.cursor"


def test_a_malformed_run_id_is_422_and_an_unknown_route_404(
    api: Any, tenant_headers: dict[str, str]
) -> None:
    error = assert_error(api.get("/runs/abc", headers=tenant_headers), 422, "INVALID_INPUT")
    assert error["details"]["errors"][0]["field"] == "path.run_id"
    assert_error(api.get("/nowhere", headers=tenant_headers), 404, "NOT_FOUND")
    assert_error(api.delete("/runs", headers=tenant_headers), 405, "METHOD_NOT_ALLOWED")


# -- what healed, what is deferred, what was re-driven ---------------------------------------


def items_by_key(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["item_key"]: item for item in run["items"]}


def test_a_run_shows_what_healed_and_when_with_its_old_reasons(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    seeded = aftercare_run(tenant)
    response = api.get(f"/runs/{seeded.run_id}", headers=tenant_headers)
    assert response.status_code == 200, response.text
    run = response.json()

    assert run["healed"] == 1
    assert run["last_healed_at"] == "2026-12-01T09:05:00Z"
    assert run["redriven"] == 1
    assert run["deferred"] == {"waiting": 1, "healing": 1, "healed": 1, "expired": 1}
    items = items_by_key(run)

    healed = items["company:healed"]
    assert (healed["status"], healed["degraded_reasons"]) == ("succeeded", [])
    assert healed["healed_at"] == "2026-12-01T09:05:00Z"
    assert healed["history"] == [
        {
            "at": "2026-12-01T09:04:00Z",
            "event": "healing",
            "why": None,
            "step": None,
            "status": "degraded",
            "reasons": ["CIRCUIT_OPEN:lusha"],
            "vendors": ["lusha"],
        },
        {
            "at": "2026-12-01T09:05:00Z",
            "event": "healed",
            "why": None,
            "step": None,
            "status": None,
            "reasons": None,
            "vendors": ["lusha"],
        },
    ]
    assert healed["deferred"] == [], "a healed deferral is no longer waited for"

    waiting = items["company:waiting"]
    assert waiting["healed_at"] is None and waiting["history"] == []
    assert waiting["deferred"] == [
        {
            "vendor": "zerobounce",
            "reason": "ZEROBOUNCE_DEFER",
            "status": "waiting",
            "attempts": 2,
            "next_try_at": "2026-12-01T09:10:00Z",
        }
    ], "the expired lusha deferral is not live"
    assert [d["status"] for d in items["company:healing"]["deferred"]] == ["healing"]

    redriven = items["company:redriven"]
    assert (redriven["redrives"], redriven["step"]) == (2, "record_item")
    assert redriven["progress_at"] == "2026-12-01T09:03:00Z"
    assert [(e["event"], e["why"], e["step"]) for e in redriven["history"]] == [
        ("redriven", "lease", "crawl_site"),
        ("redriven", "redis_reset", "find_contacts:primary"),
    ]

    other = seeded_run(tenant, {"company:1": (ItemStatus.SUCCEEDED, [])})
    listed = api.get("/runs", headers=tenant_headers).json()["runs"]
    assert [(r["id"], r["healed"]) for r in listed] == [
        (str(other.run_id), 0),
        (str(seeded.run_id), 1),
    ]


def test_a_run_with_nothing_healed_or_deferred_says_so(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    seeded = seeded_run(tenant, {"company:1": (ItemStatus.SUCCEEDED, [])})
    run = api.get(f"/runs/{seeded.run_id}", headers=tenant_headers).json()
    assert (run["healed"], run["last_healed_at"], run["redriven"]) == (0, None, 0)
    assert run["deferred"] == {"waiting": 0, "healing": 0, "healed": 0, "expired": 0}
    (item,) = run["items"]
    assert (item["healed_at"], item["history"], item["deferred"], item["redrives"]) == (
        None,
        [],
        [],
        0,
    )


def test_no_secret_an_event_or_deferral_carries_is_answered(
    api: Any, tenant_headers: dict[str, str], admin_headers: dict[str, str], tenant: int
) -> None:
    seeded = aftercare_run(tenant)
    with_secrets(seeded)
    for headers in (tenant_headers, admin_headers):
        response = api.get(f"/runs/{seeded.run_id}", headers=headers)
        assert response.status_code == 200
        assert SECRET not in response.text
    item = items_by_key(response.json())["company:waiting"]
    healed, redriven, reopened = item["history"]
    assert set(healed) == {"at", "event", "why", "step", "status", "reasons", "vendors"}
    assert healed["vendors"] == ["lusha", "other"]
    assert (redriven["why"], redriven["step"]) == ("other", "crawl_site")
    assert reopened["reasons"] == ["CRM_REJECTED:bad", "OTHER"]
    assert {d["vendor"]: d["reason"] for d in item["deferred"]} == {
        "crm": "OTHER",
        "zerobounce": "ZEROBOUNCE_DEFER",
    }


def test_another_tenants_run_with_heals_is_404(
    api: Any, admin_headers: dict[str, str], tenant: int
) -> None:
    seeded = aftercare_run(tenant)
    other_key, _ = create_api_key(tenant_id=tenant + 1)
    response = api.get(f"/runs/{seeded.run_id}", headers={"X-API-Key": other_key})
    body = assert_error(response, 404, "NOT_FOUND")
    assert "company:" not in response.text and body["message"] == "no run with this id"
    assert api.get(f"/runs/{seeded.run_id}", headers=admin_headers).json()["healed"] == 1


def test_a_runs_deferrals_are_read_in_one_query_whatever_its_size(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    """Statements a `GET /runs/{id}` makes, for a run of 2 items and one of 60, each item
    with a deferral and a heal: the same number (no query per item)."""
    from pipeline.db.engine import engine_for
    from pipeline.settings import get_settings

    def statements_for(size: int) -> int:
        keys = [f"company:{n}" for n in range(size)]
        seeded = seeded_run(
            tenant, {key: (ItemStatus.DEGRADED, ["ZEROBOUNCE_DEFER"]) for key in keys}
        )
        for key in keys:
            defer(seeded, key, "zerobounce", "ZEROBOUNCE_DEFER", DeferralStatus.WAITING)
            write_item(seeded.items[key], healed_at=at(1), history=healed_history(1))
        api.get(f"/runs/{seeded.run_id}", headers=tenant_headers)  # the key is cached now
        seen: list[str] = []
        engine = engine_for(get_settings().database_url)

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            run = api.get(f"/runs/{seeded.run_id}", headers=tenant_headers).json()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert (run["healed"], run["deferred"]["waiting"]) == (size, size)
        assert all(len(item["deferred"]) == 1 for item in run["items"])
        return len(seen)

    small, large = statements_for(2), statements_for(60)
    assert 0 < small == large, (small, large)


def test_a_replayed_item_shows_the_reasons_it_had_before(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    """The history event a replay really writes (`pipeline.reopening`), read back."""
    from pipeline.reopening import reopen_items
    from pipeline.runs import finish_item

    seeded = seeded_run(tenant, {"company:1": (ItemStatus.FAILED, ["CRM_UNAVAILABLE:TIMEOUT"])})
    assert [item.status for item in reopen_items(seeded.run_id)] == [ItemStatus.FAILED]
    finish_item(seeded.items["company:1"], ItemStatus.SUCCEEDED)

    run = api.get(f"/runs/{seeded.run_id}", headers=tenant_headers).json()
    assert run["status"] == "succeeded"
    (item,) = run["items"]
    (reopened,) = item["history"]
    assert (reopened["event"], reopened["status"], reopened["reasons"]) == (
        "reopened",
        "failed",
        ["CRM_UNAVAILABLE:TIMEOUT"],
    )
    assert reopened["at"] is not None and item["healed_at"] is None
