"""Degraded work heals (issue 9, item 4): work deferred while a tenant's vendor was down is
redone once it is back — only the missing steps — and the run, its counts and the stages
after it move with it, the old reasons kept in each item's history.

Real worker, Redis, Postgres and simulator. A vendor "comes back" by clearing its fault;
its breaker's cool-off (300 s here) is not slept through: the breaker is put open as of
longer ago than that, so the reconciler's probe is what closes it, for real.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from pipeline import runs
from pipeline.breakers import breaker_for, factory
from pipeline.breakers.contract import OPEN
from pipeline.db.breaker_events import breaker_events
from pipeline.db.engine import session_scope
from pipeline.db.models import (
    FINISHED_ITEM_STATUSES,
    Deferral,
    ItemStatus,
    ReconcilerMark,
    Run,
    RunItem,
)
from pipeline.enqueue import enqueue_enrichment
from pipeline.reopening import reopen_items
from pipeline.replay import replay_run
from pipeline.settings import get_settings, load_settings
from pipeline.simulator import Simulator
from tasks.maintenance import reconciler
from tests.support.processes import wait_until
from tests.support.runs import calls, company, finished, stages_of
from tests.support.tenants import ready_tenant

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(autouse=True)
def fresh_marks(integration_env: dict[str, str]) -> Iterator[None]:
    with session_scope() as session:
        session.execute(delete(ReconcilerMark))
    yield


def cooled_off(tenant: int, vendor: str) -> None:
    """The breaker is open, as of longer ago than its cool-off: the next call probes."""
    long_ago = time.time() - get_settings().breaker_config(vendor).cool_off_s - 1
    factory().storage(tenant, vendor).force(OPEN, long_ago)


def deferred_of(run_id: uuid.UUID) -> list[Deferral]:
    with session_scope() as session:
        return list(session.scalars(select(Deferral).where(Deferral.run_id == run_id)))


def closed_again(run_id: uuid.UUID, replays: int = 1) -> runs.RunView:
    def done() -> runs.RunView | None:
        view = runs.get_run(run_id)
        ok = view and view.run.replays >= replays and view.run.finished_at is not None
        return view if ok else None

    return wait_until(done, timeout=90, interval=0.1, what=f"run {run_id} to close again")


def test_unverified_emails_heal_and_the_export_gets_them(
    simulator: Simulator, tenant: int, api: Any, tenant_headers: dict[str, str]
) -> None:
    """Email verification down for the whole run: every item degraded ZEROBOUNCE_DEFER,
    CRM sync and export go on. Back: only the verification is redone, the run becomes
    succeeded, and the export writes each company again, now with its verified email."""
    ready_tenant(simulator, tenant)
    simulator.set_fault(vendor="zerobounce", tenant=tenant, down=True)
    n = 4
    first = enqueue_enrichment(
        tenant, [company(i, tenant) for i in range(n)], then=["crm_sync", "export"]
    )
    view = finished(first)
    assert view.run.status == "degraded"
    assert all("ZEROBOUNCE_DEFER" in i.degraded_reasons for i in view.items)
    stages = stages_of(first, 2)
    assert stages["export"].status == "succeeded"
    assert not any(p.get("email") for p in simulator.erp_partners(tenant)), "none verified"
    assert {d.vendor for d in deferred_of(first)} == {"zerobounce"}
    crawled = calls(simulator, "crawler", tenant)

    simulator.set_fault(vendor="zerobounce", tenant=tenant)  # it is back
    cooled_off(tenant, "zerobounce")
    report = reconciler().run(tenant_id=tenant)

    assert report.heal.healing == {"zerobounce": n}, report.as_dict()
    healed = closed_again(first)
    assert healed.run.status == "succeeded" and healed.run.items_succeeded == n
    assert all(i.healed_at and not i.degraded_reasons for i in healed.items)
    history = healed.items[0].history
    assert [e["event"] for e in history] == ["healing", "healed"]
    assert "ZEROBOUNCE_DEFER" in history[0]["reasons"] and history[1]["vendors"] == ["zerobounce"]
    assert {d.status for d in deferred_of(first)} == {"healed"}
    assert calls(simulator, "crawler", tenant) == crawled, "only the missing step was redone"
    assert breaker_for(tenant, "zerobounce").current_state == "closed", "the probe closed it"
    shown = api.get(f"/runs/{first}", headers=tenant_headers).json()
    assert shown["healed"] == n and shown["deferred"]["healed"] == n
    assert [e["event"] for e in shown["items"][0]["history"]] == ["healing", "healed"]
    assert "ZEROBOUNCE_DEFER" in shown["items"][0]["history"][0]["reasons"]

    export = stages_of(first, 2)["export"]
    wait_until(
        lambda: (
            closed_again(export.id).run.status == "succeeded"
            and sum(1 for p in simulator.erp_partners(tenant) if p.get("email")) >= n - 1
        ),
        timeout=60,
        what="the export to write the verified emails",
    )
    refs = [p["ref"] for p in simulator.erp_partners(tenant)]
    assert len(refs) == len(set(refs)) == n, "written again, never twice"


def test_a_crm_down_for_a_whole_sync_heals_and_never_stops_the_export(
    simulator: Simulator, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    simulator.set_fault(vendor="crm", tenant=tenant, down=True)
    first = enqueue_enrichment(
        tenant, [company(i, tenant) for i in range(3)], then=["crm_sync", "export"]
    )
    stages = stages_of(first, 2)
    sync = runs.get_run(stages["crm_sync"].id)
    assert sync is not None and sync.run.status == "failed"
    assert all(i.degraded_reasons.startswith("CRM_UNAVAILABLE") for i in sync.items)
    assert stages["export"].status == "succeeded", "a CRM that will come back stops nothing"

    simulator.set_fault(vendor="crm", tenant=tenant)
    cooled_off(tenant, "crm")
    reconciler().run(tenant_id=tenant)

    healed = closed_again(sync.run.id)
    assert healed.run.status == "succeeded"
    assert len(simulator.crm_contacts(tenant)) == healed.run.items_total
    assert all(i.healed_at for i in healed.items)
    assert {d.status for d in deferred_of(sync.run.id)} == {"healed"}


def test_an_export_disabled_by_a_down_erp_heals(simulator: Simulator, tenant: int) -> None:
    ready_tenant(simulator, tenant)
    simulator.set_fault(vendor="erp", tenant=tenant, down=True)
    first = enqueue_enrichment(tenant, [company(i, tenant) for i in range(3)], then=["export"])
    export = stages_of(first, 1)["export"]
    view = runs.get_run(export.id)
    assert view is not None and view.run.export_disabled
    assert all(i.degraded_reasons.startswith("EXPORT_DISABLED") for i in view.items)

    simulator.set_fault(vendor="erp", tenant=tenant)
    cooled_off(tenant, "erp")
    reconciler().run(tenant_id=tenant)

    healed = closed_again(export.id)
    assert healed.run.status == "succeeded" and not healed.run.export_disabled
    assert len(simulator.erp_partners(tenant)) == 3
    assert {d.status for d in deferred_of(export.id)} == {"healed"}
    assert all(i.healed_at for i in healed.items)


def test_a_vendor_still_down_is_not_healed_and_heals_stay_bounded(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="zerobounce", tenant=tenant, down=True)
    first = enqueue_enrichment(tenant, [company(1, tenant)])
    finished(first)
    cooled_off(tenant, "zerobounce")

    report = reconciler().run(tenant_id=tenant)  # the probe fails: it opens again

    assert report.heal.healing == {} and report.heal.probed == 1
    assert breaker_for(tenant, "zerobounce").current_state == "open"
    assert {d.status for d in deferred_of(first)} == {"waiting"}
    events = [(e.from_state, e.to_state) for e in breaker_events(tenant, "zerobounce")]
    assert events[-2:] == [("open", "half-open"), ("half-open", "open")]

    with session_scope() as session:  # out of attempts: given up, the item stays degraded
        session.execute(
            update(Deferral)
            .where(Deferral.run_id == first)
            .values(attempts=get_settings().heal_max_attempts)
        )
    assert reconciler().run(tenant_id=tenant).heal.expired == 1
    assert {d.status for d in deferred_of(first)} == {"expired"}
    assert runs.get_run(first).items[0].status == "degraded"  # type: ignore[union-attr]


def test_healing_switched_off_for_a_tenant_and_vendor(simulator: Simulator, tenant: int) -> None:
    simulator.set_fault(vendor="zerobounce", tenant=tenant, down=True)
    first = enqueue_enrichment(tenant, [company(1, tenant)])
    finished(first)
    simulator.set_fault(vendor="zerobounce", tenant=tenant)
    breaker_for(tenant, "zerobounce").close()
    off = reconciler(load_settings(healing_off=f"{tenant}:zerobounce"))
    assert off.run(tenant_id=tenant).heal.healing == {}
    assert {d.status for d in deferred_of(first)} == {"waiting"}


def test_an_idle_open_breaker_is_probed_and_closes(simulator: Simulator, tenant: int) -> None:
    """Nobody calls the vendor any more: the reconciler's probe still closes its breaker,
    so an idle tenant's breaker does not stay open (and alerting) once the vendor is back."""
    cooled_off(tenant, "search")
    report = reconciler().run(tenant_id=tenant)
    assert report.heal.probed == 1
    assert breaker_for(tenant, "search").current_state == "closed"
    assert calls(simulator, "search", tenant) == 1, "one probe"


def test_a_replayed_item_reaches_the_stages_that_followed(
    simulator: Simulator, tenant: int
) -> None:
    """An item that died is replayed after its pipeline went on without it: the export
    that had followed gets its company too."""
    ready_tenant(simulator, tenant)
    first = enqueue_enrichment(tenant, [company(i, tenant) for i in range(3)], then=["export"])
    finished(first)
    export = stages_of(first, 1)["export"]
    assert len(simulator.erp_partners(tenant)) == 3
    # one item had died before the export: what the export would have lacked
    item = runs.get_run(first).items[0]  # type: ignore[union-attr]
    reopen_items(first, [item.id], statuses=FINISHED_ITEM_STATUSES)
    runs.finish_item(item.id, ItemStatus.DEAD, ["DEAD_LETTER:WORKER_LOST"])
    with session_scope() as session:
        session.execute(
            delete(RunItem).where(RunItem.run_id == export.id, RunItem.item_key == item.item_key)
        )
        session.execute(update(Run).where(Run.id == export.id).values(items_total=2, items_done=2))

    assert replay_run(first) == 1
    closed_again(first, replays=2)
    fed = wait_until(
        lambda: (
            (v := runs.get_run(export.id)) and v.run.items_total == 3 and v.run.finished_at and v
        ),
        timeout=60,
        what="the export to be fed the replayed company",
    )
    assert [i.status for i in fed.items] == ["succeeded"] * 3
    refs = [p["ref"] for p in simulator.erp_partners(tenant)]
    assert len(refs) == len(set(refs)) == 3


def test_open_breakers_survive_a_redis_that_restarts_empty(
    integration_env: dict[str, str], tenant: int
) -> None:
    from tests.support.processes import PrivateRedis
    from tests.support.stack import environment

    state = PrivateRedis()
    try:
        with environment({"REDIS_URL": state.url}):
            watched = reconciler()
            watched.run(tenant_id=tenant)  # leaves its epoch in that Redis
            breaker_for(tenant, "lusha").open()  # a transition, in breaker_events
            opened_at = breaker_events(tenant, "lusha")[-1].at
            state.stop()
            state.start()  # empty: every breaker closed
            assert breaker_for(tenant, "lusha").current_state == "closed"

            report = watched.run(tenant_id=tenant)

            assert "state" in report.resets and report.breakers_restored >= 1
            assert breaker_for(tenant, "lusha").current_state == "open"
            restored_at = factory().storage(tenant, "lusha").opened_at
            assert restored_at is not None
            assert abs((restored_at - opened_at).total_seconds()) < 0.01, "its cool-off runs on"
    finally:
        state.stop()


def test_an_item_waiting_for_two_vendors_heals_one_and_keeps_waiting_for_the_other(
    simulator: Simulator, tenant: int
) -> None:
    simulator.set_fault(vendor="crawler", tenant=tenant, down=True)
    simulator.set_fault(vendor="search", tenant=tenant, down=True)
    simulator.set_fault(vendor="zerobounce", tenant=tenant, down=True)
    first = enqueue_enrichment(tenant, [company(1, tenant)])
    assert finished(first).items[0].status == "degraded"
    assert {d.vendor for d in deferred_of(first)} == {"crawler", "search", "zerobounce"}

    simulator.set_fault(vendor="zerobounce", tenant=tenant)  # only verification is back
    cooled_off(tenant, "zerobounce")
    reconciler().run(tenant_id=tenant)

    (healed,) = closed_again(first).items
    assert healed.status == "degraded" and healed.healed_at is not None
    reasons = healed.degraded_reasons.split(",")
    assert "ZEROBOUNCE_DEFER" not in reasons and "CRAWL_ERROR" in reasons
    status = {d.vendor: d.status for d in deferred_of(first)}
    assert status == {"crawler": "waiting", "search": "waiting", "zerobounce": "healed"}


def test_a_stage_skipped_for_want_of_contacts_starts_once_they_heal(
    simulator: Simulator, tenant: int
) -> None:
    """The contact vendor down for the whole run: no contacts, so the pipeline skipped its
    CRM sync. Once the vendor is back and the lookups heal, the CRM sync starts after all."""
    ready_tenant(simulator, tenant)
    simulator.set_fault(vendor="apify_linkedin", tenant=tenant, down=True)
    first = enqueue_enrichment(
        tenant, [company(i, tenant) for i in range(3)], then=["crm_sync", "export"]
    )
    finished(first)
    assert stages_of(first, 1)["export"].status == "succeeded"  # the CRM sync was skipped

    simulator.set_fault(vendor="apify_linkedin", tenant=tenant)
    cooled_off(tenant, "apify_linkedin")
    reconciler().run(tenant_id=tenant)

    assert closed_again(first).run.status == "succeeded"
    stages = stages_of(first, 2)
    assert stages["crm_sync"].status == "succeeded"
    assert len(simulator.crm_contacts(tenant)) == stages["crm_sync"].items_total > 0
