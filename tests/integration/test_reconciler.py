"""The reconciler (issue 9, item 1): Postgres says which work is open; work whose message
was lost is re-driven from its last durable step, and nothing waits forever.

Messages are "lost" here the honest way: the work is recorded in Postgres exactly as a step
leaves it (`progress.mark_step`, as a step does when it starts) and no message is sent — or
a worker holding messages is SIGKILLed. Passes run with an injected `now` past the lease,
rather than sleeping through it; the session worker does the re-driven work for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import delete, select, update

from pipeline import dead_letters, progress, runs
from pipeline.db.engine import session_scope
from pipeline.db.models import ItemStatus, ReconcilerMark, RunItem, utcnow
from pipeline.reconciler import Reconciler
from pipeline.replay import replay_entry
from pipeline.settings import get_settings, load_settings
from pipeline.simulator import Simulator
from tasks.maintenance import CeleryBroker, CeleryDispatch
from tests.support.processes import REPO, PrivateRedis, Worker, wait_until
from tests.support.runs import calls, finished, unsent_run
from tests.support.stack import own_redis_url
from workers.app import create_app

pytestmark = pytest.mark.usefixtures("worker")
SIDE_BROKER = own_redis_url(1)


@pytest.fixture(autouse=True)
def fresh_marks(integration_env: dict[str, str]) -> Iterator[None]:
    """Each test starts with a reconciler that has seen nothing (marks are global)."""
    with session_scope() as session:
        session.execute(delete(ReconcilerMark))
    yield


def later(seconds: float | None = None) -> Any:
    """A moment past every lease (or `seconds` from now)."""
    lease = max(get_settings().reconcile_lease_s.values())
    return utcnow() + timedelta(seconds=lease + 1 if seconds is None else seconds)


def reconciler(app: Any = None, **settings: Any) -> Reconciler:
    chosen = load_settings(**settings) if settings else get_settings()
    return Reconciler(chosen, CeleryBroker(app or create_app(), chosen), CeleryDispatch())


def step_context(tenant: int, run_id: uuid.UUID, item: RunItem, **found: Any) -> dict[str, Any]:
    company_id = int(item.item_key.split(":")[1])
    view = runs.get_run(run_id)
    assert view is not None
    n = company_id
    return {
        "run_id": str(run_id),
        "item_id": item.id,
        "tenant_id": tenant,
        "company": {"id": company_id, "name": f"Co {n}", "domain": f"co-{n}-{tenant}.com"},
        "had_contacts": False,
        "options": view.run.options,
        "reasons": [],
        **found,
    }


def history(item_id: int) -> list[dict[str, Any]]:
    with session_scope() as session:
        return list(session.scalar(select(RunItem.history).where(RunItem.id == item_id)) or [])


def test_lost_work_is_re_driven_from_its_last_durable_step(
    simulator: Simulator, tenant: int
) -> None:
    """One item whose message was lost after `verify_emails` started, one whose run task
    was never delivered: each goes on from where Postgres says it was."""
    run_id, (late, unstarted) = unsent_run(tenant, 2)
    contacts = [{"name": "Ada Lovelace", "title": "CTO", "email": f"ada@co-{tenant}.com"}]
    ctx = step_context(tenant, run_id, late, contacts=contacts, site_text_length=900)
    assert progress.mark_step(late.id, run_id, tenant, "verify_emails", ctx)

    report = reconciler().run(now=later())

    assert report.redriven["enrichment"] == 2
    view = finished(run_id)
    assert [i.status for i in view.items] == ["succeeded", "succeeded"], [
        (i.status, i.degraded_reasons) for i in view.items
    ]
    assert calls(simulator, "zerobounce", tenant) == 2, "each item's emails verified once"
    assert calls(simulator, "crawler", tenant) == 1, "only the unstarted item was crawled"
    late_history = history(late.id)
    assert [(e["event"], e["why"], e["step"]) for e in late_history] == [
        ("redriven", "lease", "verify_emails")
    ]
    assert history(unstarted.id)[0]["step"] is None


def test_work_that_may_still_be_queued_is_not_re_driven(
    integration_env: dict[str, str], tenant: int
) -> None:
    """A quiet item whose queue has not been seen empty since it last moved may be waiting
    behind a long queue: sending it again would only run it twice."""
    app = create_app(load_settings(broker_url=SIDE_BROKER, result_backend=SIDE_BROKER))
    side = redis.Redis.from_url(SIDE_BROKER)
    side.flushdb()
    side.lpush("default", b'{"stands for": "a long queue"}')
    run_id, (_item,) = unsent_run(tenant, 1)
    busy = Reconciler(get_settings(), CeleryBroker(app, get_settings()), CeleryDispatch())
    try:
        report = busy.run(now=later(), tenant_id=tenant)
        assert report.overdue["enrichment"] == 1 and not report.redriven, report
        assert runs.get_run(run_id).items[0].redrives == 0  # type: ignore[union-attr]

        side.delete("default")  # the queue drains, and the item still has not moved
        report = busy.run(now=later(), tenant_id=tenant)
        assert report.redriven["enrichment"] == 1, report
    finally:
        side.flushdb()
    assert finished(run_id).items[0].status == "succeeded"


def test_a_quiet_item_inside_its_lease_is_left_alone(tenant: int) -> None:
    run_id, (_item,) = unsent_run(tenant, 1)
    report = reconciler().run(now=later(seconds=5), tenant_id=tenant)
    assert not report.redriven and not report.overdue
    assert runs.get_run(run_id).items[0].status == "pending"  # type: ignore[union-attr]


def test_an_item_re_driven_too_often_is_dead_lettered_as_stalled_and_replayable(
    tenant: int,
) -> None:
    run_id, (item,) = unsent_run(tenant, 1)
    max_redrives = get_settings().reconcile_max_redrives
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.id == item.id).values(redrives=max_redrives))

    report = reconciler().run(now=later(), tenant_id=tenant)

    assert report.stalled == 1 and not report.redriven
    view = finished(run_id)
    assert view.items[0].status == "dead"
    assert view.items[0].degraded_reasons == "DEAD_LETTER:STALLED"
    (entry,) = dead_letters.list_entries(run_id=run_id)
    assert (entry.path, entry.error_code, entry.item_id) == ("stalled", "STALLED", item.id)
    assert f"after {max_redrives} re-drives" in entry.message

    replay_entry(entry.id)  # a person gives it another go: a fresh re-drive budget
    view = wait_until(
        lambda: (v := runs.get_run(run_id)) and v.items[0].status == "succeeded" and v,
        timeout=60,
        what="the replayed item to succeed",
    )
    assert view.items[0].redrives == 0


def test_steps_for_finished_or_unknown_items_call_no_vendor(
    simulator: Simulator, tenant: int, celery_app: Any, worker: Worker
) -> None:
    run_id = uuid.uuid4()
    ghost = {
        "run_id": str(run_id),
        "item_id": 10**12,
        "tenant_id": tenant,
        "company": {"id": 1, "name": "Ghost", "domain": f"ghost-{tenant}.com"},
        "had_contacts": False,
        "options": {},
        "reasons": [],
    }
    sent = celery_app.send_task("tasks.enrichment.crawl_site", args=[ghost])
    wait_until(lambda: f"[{sent.id}] ignored" in worker.log_text(), what="the ghost step to stop")
    assert '"event": "step.refused"' in worker.log_text()
    assert calls(simulator, "crawler", tenant) == 0

    garbage = celery_app.send_task("tasks.enrichment.crawl_site", args=["not a context"])
    entry = wait_until(
        lambda: next(
            (e for e in dead_letters.list_entries(limit=20) if e.task_id == garbage.id), None
        ),
        what="the malformed step to be dead-lettered",
    )
    assert (entry.path, entry.error_code) == ("rejected", "INVALID_INPUT")


def test_a_run_whose_items_all_finished_is_closed(tenant: int) -> None:
    run_id, _items = unsent_run(tenant, 2)
    with session_scope() as session:  # finished, but the latch never counted them
        session.execute(update(RunItem).where(RunItem.run_id == run_id).values(status="succeeded"))
    report = reconciler().run(now=later(), tenant_id=tenant)
    assert report.runs_closed == 1
    view = runs.get_run(run_id)
    assert view is not None and view.run.status == "succeeded" and view.run.items_succeeded == 2


def test_a_redis_that_restarts_empty_has_its_open_items_re_driven_at_once(
    simulator: Simulator, tenant: int
) -> None:
    """The broker came back without the messages it held: no lease to wait out."""
    broker = PrivateRedis()
    try:
        app = create_app(load_settings(broker_url=broker.url, result_backend=broker.url))
        watched = reconciler(app, broker_url=broker.url, result_backend=broker.url)
        assert watched.run(tenant_id=tenant).resets == []  # leaves its epoch there
        run_id, (item,) = unsent_run(tenant, 1)
        assert watched.run(tenant_id=tenant).redriven == {}, "quiet, but inside its lease"

        broker.stop()
        broker.start()  # same port, empty
        report = watched.run(tenant_id=tenant)

        assert report.resets == ["broker"]
        assert report.redriven["enrichment"] == 1
        assert history(item.id)[-1]["why"] == "redis_reset"
        assert finished(run_id).items[0].status == "succeeded"
        assert watched.run(tenant_id=tenant).resets == [], "a reset is found once"
    finally:
        broker.stop()


def test_a_worker_main_process_killed_mid_run_strands_nothing(
    integration_env: dict[str, str], simulator: Simulator, tenant: int, tmp_path: Any
) -> None:
    """SIGKILL the whole worker (main process and pool): its unacked messages sit in the
    broker until the visibility timeout (an hour by default). The reconciler does not wait
    for that: every item finishes, and is recorded once."""
    side_env = {**integration_env, "BROKER_URL": SIDE_BROKER, "RESULT_BACKEND": SIDE_BROKER}
    app = create_app(load_settings(broker_url=SIDE_BROKER, result_backend=SIDE_BROKER))
    doomed = Worker(side_env, tmp_path / "doomed.log", concurrency=2, name="doomed")
    n = 12
    try:
        doomed.wait_ready(app)
        simulator.set_fault(vendor="apify_linkedin", tenant=tenant, latency_ms=300)
        run_id, _ = unsent_run(tenant, n)
        app.send_task("tasks.enrichment.start_run", args=[str(run_id)])
        wait_until(
            lambda: 2 <= runs.progress(run_id)[0] < n - 2,
            timeout=60,
            interval=0.02,
            what="the run to be under way",
        )
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        done_at_kill = runs.progress(run_id)[0]

        reconciler().run(now=later(), tenant_id=tenant)

        view = finished(run_id, timeout=90)
        assert [i.status for i in view.items] == ["succeeded"] * n
        redriven = sum(i.redrives for i in view.items)
        assert redriven >= n - done_at_kill
        # A step marks its item as it starts: a re-drive repeats at most the one step whose
        # result was in the lost message, so no vendor is asked more than once more per item.
        for vendor in ("crawler", "apify_linkedin", "zerobounce"):
            assert n <= calls(simulator, vendor, tenant) <= n + redriven, vendor
    finally:
        simulator.set_fault(vendor="apify_linkedin", tenant=tenant)
        doomed.stop()
        redis.Redis.from_url(SIDE_BROKER).flushdb()


def test_pipeline_reconcile_runs_one_pass_and_reports_it(
    integration_env: dict[str, str], tenant: int
) -> None:
    env = {**os.environ, **integration_env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "reconcile", "--tenant", str(tenant), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"resets", "redriven", "stalled", "runs_closed", "handoffs"} <= set(report)
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "reconcile", "--tenant", "zero"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "tenant must be a positive integer" in bad.stderr


def test_an_old_copy_of_re_driven_work_stops_at_its_next_step(
    simulator: Simulator, tenant: int, celery_app: Any, worker: Worker
) -> None:
    """A message of the work as it was before a re-drive turns up late (it had been waiting
    in a queue after all): it stops, calling no vendor, and the item is recorded once."""
    run_id, (item,) = unsent_run(tenant, 1)
    ctx = step_context(tenant, run_id, item, generation=0)
    assert progress.mark_step(item.id, run_id, tenant, "crawl_site", ctx, generation=0)
    reconciler().run(now=later(), tenant_id=tenant)  # re-driven: now generation 1
    assert finished(run_id).items[0].status == "succeeded"
    crawled = calls(simulator, "crawler", tenant)

    late = celery_app.send_task("tasks.enrichment.crawl_site", args=[ctx])
    wait_until(lambda: f"[{late.id}] ignored" in worker.log_text(), what="the old copy to stop")
    assert calls(simulator, "crawler", tenant) == crawled


def test_a_run_recorded_failed_before_it_was_sent_is_not_run_by_the_reconciler(
    tenant: int,
) -> None:
    run_id, _ = unsent_run(tenant, 2)
    runs.fail_unstarted(run_id, "ENQUEUE_FAILED")  # what POST /runs does with the broker down
    report = reconciler().run(now=later(), tenant_id=tenant)
    assert not report.redriven and not report.overdue
    view = runs.get_run(run_id)
    assert view is not None and view.run.status == "failed"
    assert [i.redrives for i in view.items] == [0, 0]


def test_a_run_of_many_lost_items_is_sent_once(tenant: int, celery_app: Any) -> None:
    """Every item of the run is claimed with it, so no later pass sends the run again."""
    run_id, _ = unsent_run(tenant, 5)
    report = reconciler().run(now=later(), tenant_id=tenant)
    assert report.redriven["enrichment"] == 5
    assert finished(run_id).run.status == "succeeded"
    assert [e["event"] for i in runs.get_run(run_id).items for e in history(i.id)] == [  # type: ignore[union-attr]
        "redriven"
    ] * 5
    assert not reconciler().run(now=later(), tenant_id=tenant).redriven


def test_an_item_that_stalls_again_after_a_replay_is_dead_lettered_again(tenant: int) -> None:
    run_id, (item,) = unsent_run(tenant, 1)
    top = get_settings().reconcile_max_redrives
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.id == item.id).values(redrives=top))
    assert reconciler().run(now=later(), tenant_id=tenant).stalled == 1
    (first,) = dead_letters.list_entries(run_id=run_id)
    from pipeline.reopening import reopen_items

    reopen_items(run_id, [item.id])  # replayed by hand ... and lost again, as often
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.id == item.id).values(redrives=top))
    assert reconciler().run(now=later(), tenant_id=tenant).stalled == 1
    entries = dead_letters.list_entries(run_id=run_id)
    assert len(entries) == 2 and first.id in {e.id for e in entries}
    assert finished(run_id).items[0].status == "dead", "its run closes again"


def test_a_replayed_step_runs_as_the_new_copy_of_its_items_work(tenant: int) -> None:
    """A step that died is replayed with the rest of its chain: it must not be taken for a
    late message of the old copy (the replay bumped the item's generation)."""
    run_id, (item,) = unsent_run(tenant, 1)
    ctx = step_context(tenant, run_id, item, generation=0, contacts=[])
    runs.finish_item(item.id, ItemStatus.DEAD, ["STEP_ERROR:IntegrityError"])
    entry_id = dead_letters.record(
        task_id=uuid.uuid4().hex,
        task_name="tasks.enrichment.record_item",
        args=[ctx],
        kwargs={},
        path="failure",
        error_code="IntegrityError",
        message="IntegrityError: as if the database had refused the write",
        options={"context": True},
    )
    assert entry_id is not None
    replay_entry(entry_id)
    view = finished(run_id)
    assert view.items[0].status == "succeeded" and view.items[0].generation == 1


def test_a_reopened_item_whose_message_is_lost_is_re_driven(tenant: int) -> None:
    """An item that had finished, was reopened (a replay) and whose run task never came:
    its old checkpoint is gone, so it goes back through its run's task."""
    from pipeline.reopening import reopen_items

    run_id, (item,) = unsent_run(tenant, 1)
    ctx = step_context(tenant, run_id, item, generation=0)
    assert progress.mark_step(item.id, run_id, tenant, "crawl_site", ctx, generation=0)
    runs.finish_item(item.id, ItemStatus.DEAD, ["STEP_ERROR:X"])
    reopen_items(run_id, [item.id])  # ... and the replay's message is lost

    assert reconciler().run(now=later(), tenant_id=tenant).redriven["enrichment"] == 1
    assert finished(run_id).items[0].status == "succeeded"


def test_every_spent_unstarted_item_of_a_run_is_dead_lettered_in_one_pass(tenant: int) -> None:
    run_id, _ = unsent_run(tenant, 3)
    top = get_settings().reconcile_max_redrives
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.run_id == run_id).values(redrives=top))
    report = reconciler().run(now=later(), tenant_id=tenant)
    assert report.stalled == 3
    view = finished(run_id)
    assert [i.status for i in view.items] == ["dead"] * 3
    assert len(dead_letters.list_entries(run_id=run_id)) == 3
