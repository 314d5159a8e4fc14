"""Every way a task dies lands in the dead-letter store once, and replay puts it right.

Real worker, Redis broker, Postgres, the vendor stub and the simulator."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis
from celery import chain
from kombu import Connection, Exchange, Producer

from pipeline import dead_letters, enqueue_crm_sync, runs
from pipeline.companies import contact_ids_of_companies
from pipeline.db.models import RunKind
from pipeline.errors import AlreadyReplayedError, NotFoundError
from pipeline.reopening import reopen_items
from pipeline.replay import put_back, replay_entry, replay_run
from pipeline.settings import get_settings
from pipeline.simulator import Simulator
from tests.support.cli import pipeline
from tests.support.crm import crm_calls, enriched, external_ids
from tests.support.dead_letters import entry_for, fetch
from tests.support.processes import Worker, wait_until
from tests.support.runs import finished, reasons
from tests.support.vendor_stub import VendorStub

pytestmark = pytest.mark.usefixtures("worker")


def test_a_non_retryable_vendor_error_is_dead_lettered_at_once(
    celery_app: Any, stub: VendorStub, tenant: int
) -> None:
    result = fetch(celery_app, stub.script(f"bad-{tenant}", [400]), tenant)
    entry = entry_for(result.id)
    assert (entry.path, entry.error_code, entry.attempts) == ("failure", "CLIENT_ERROR", 1)
    assert entry.tenant_id == tenant and entry.task_name == "tests.fetch_vendor"
    assert entry.kwargs == {"tenant_id": tenant, "vendor": "crawler"}
    assert "VendorClientError" in entry.traceback and entry.status == "dead"


def test_retries_exhausted_is_dead_lettered_with_the_attempts_made(
    celery_app: Any, stub: VendorStub, tenant: int
) -> None:
    attempts = get_settings().retry_max_attempts
    result = fetch(celery_app, stub.script(f"down-{tenant}", [503] * attempts), tenant)
    entry = entry_for(result.id)
    assert (entry.error_code, entry.attempts, entry.failures) == ("RETRIES_EXHAUSTED", attempts, 1)


def test_a_task_killed_by_its_time_limit_is_dead_lettered(
    celery_app: Any, worker: Worker, tenant: int
) -> None:
    result = celery_app.send_task("tests.hang", kwargs={"tenant_id": tenant})
    entry = entry_for(result.id)
    assert (entry.path, entry.error_code) == ("time_limit", "TIME_LIMIT")
    assert entry.tenant_id == tenant
    reported = f'"dead_letter_id": {entry.id},'
    wait_until(
        lambda: worker.log_text().count(reported) >= 2,
        what="Celery's second report of the same hard time limit",
    )
    assert dead_letters.get_entry(entry.id).failures == 1, "one death, counted once"


def test_an_undecodable_message_lands_once_and_does_not_loop(
    integration_env: dict[str, str], worker: Worker
) -> None:
    task_id = uuid.uuid4().hex
    with Connection(integration_env["BROKER_URL"]) as connection:
        Producer(connection).publish(
            b"{this is not json",
            exchange=Exchange("default"),
            routing_key="default",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"id": task_id, "task": "tests.fetch_vendor"},
            serializer=None,
        )
    entry = entry_for(task_id)
    assert (entry.path, entry.error_code) == ("undecodable", "UNDECODABLE")
    assert entry.options["body"] == "{this is not json"
    broker = redis.Redis.from_url(integration_env["BROKER_URL"])
    wait_until(  # acknowledged: not held back for redelivery after the visibility timeout
        lambda: not any(task_id.encode() in raw for raw in broker.hvals("unacked")),
        what="the message to be acknowledged",
    )
    assert not any(task_id.encode() in raw for raw in broker.lrange("default", 0, -1))
    assert dead_letters.get_entry(entry.id).failures == 1
    with pytest.raises(Exception, match="no task can run"):
        replay_entry(entry.id)


def test_replaying_an_entry_sends_it_once_under_a_new_id(
    celery_app: Any, stub: VendorStub, tenant: int
) -> None:
    url = stub.script(f"once-{tenant}", [400, 200])
    entry = entry_for(fetch(celery_app, url, tenant).id)
    with pytest.raises(NotFoundError):
        replay_entry(entry.id, tenant_id=tenant + 1)  # another tenant's: not found

    outcomes: list[Any] = []

    def replay() -> None:
        try:
            outcomes.append(replay_entry(entry.id, tenant_id=tenant))
        except AlreadyReplayedError as exc:
            outcomes.append(exc)

    racers = [threading.Thread(target=replay) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    sent = [o for o in outcomes if isinstance(o, str)]
    assert len(sent) == 1 and sum(isinstance(o, AlreadyReplayedError) for o in outcomes) == 1
    assert celery_app.AsyncResult(sent[0]).get(timeout=30)["status"] == 200
    replayed = dead_letters.get_entry(entry.id)
    assert (replayed.status, replayed.replay_task_id) == ("replayed", sent[0])
    assert len(stub.hits(f"once-{tenant}")) == 2, "the original try and one replay"


def test_replaying_a_run_redoes_only_its_failed_items_and_updates_the_run(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant, n=3)
    everyone = external_ids(tenant, source)
    simulator.set_fault(vendor="crm", tenant=tenant, reject_records=everyone[:1])
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    assert sync.run.status == "degraded" and sync.run.items_failed == 1
    calls_before = len(crm_calls(sync.run.id))
    simulator.clear_faults()

    with pytest.raises(NotFoundError):
        replay_run(sync.run.id, tenant_id=tenant + 1)
    assert replay_run(sync.run.id, tenant_id=tenant) == 1
    again = wait_until(
        lambda: ((v := finished(sync.run.id)).run.status == "succeeded" and v) or None,
        what="the replayed run to close again",
    )
    assert (again.run.items_failed, again.run.items_succeeded) == (0, len(everyone))
    assert reasons(again) == [[]] * len(everyone)
    assert len(crm_calls(sync.run.id)) == calls_before + 1, "one write: the failed record"
    assert len(simulator.crm_contacts(tenant)) == len(everyone)
    assert replay_run(sync.run.id, tenant_id=tenant) == 0, "nothing left to redo"


def test_the_dlq_command_lists_shows_replays_and_purges(
    celery_app: Any, stub: VendorStub, tenant: int
) -> None:
    entry = entry_for(fetch(celery_app, stub.script(f"cli-{tenant}", [400, 200]), tenant).id)
    listed = pipeline("dlq", "list", "--tenant", str(tenant))
    assert listed.returncode == 0 and f"{entry.id}\tdead" in listed.stdout
    shown = pipeline("dlq", "show", str(entry.id))
    assert shown.returncode == 0 and '"error_code": "CLIENT_ERROR"' in shown.stdout
    replayed = pipeline("dlq", "replay", str(entry.id))
    assert replayed.returncode == 0 and f"replayed dead letter {entry.id}" in replayed.stdout
    again = pipeline("dlq", "replay", str(entry.id))
    assert (again.returncode, again.stderr.strip()) == (
        2,
        f"pipeline: ALREADY_REPLAYED: dead letter {entry.id} was already replayed",
    )
    missing = pipeline("dlq", "show", "999999999")
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    bad_age = pipeline("dlq", "purge", "--older-than", "a while")
    assert bad_age.returncode == 2 and "an age like 30d" in bad_age.stderr
    assert pipeline("dlq", "purge", "--older-than", "30d").returncode == 0
    assert dead_letters.get_entry(entry.id).status == "replayed", "younger than 30 days: kept"
    no_tenant = pipeline("dlq", "replay", "--all")
    assert no_tenant.returncode == 2 and "needs --tenant" in no_tenant.stderr


def test_a_message_that_kills_every_worker_lands_once_after_its_redeliveries(
    celery_app: Any, worker: Worker, tenant: int
) -> None:
    result = celery_app.send_task("tests.kill_own_process", kwargs={"tenant_id": tenant})
    entry = entry_for(result.id)
    limit = get_settings().task_max_deliveries
    assert (entry.path, entry.error_code, entry.failures) == ("worker_lost", "WORKER_LOST", 1)
    assert f"delivered {limit + 1} times" in entry.message
    assert worker.log_text().count(f"tests.kill_own_process[{result.id}] received") == limit + 1


def test_a_rejected_task_is_dead_lettered(celery_app: Any, tenant: int) -> None:
    result = celery_app.send_task("tests.reject", kwargs={"tenant_id": tenant})
    entry = entry_for(result.id)
    assert (entry.path, entry.error_code, entry.tenant_id) == ("rejected", "CLIENT_ERROR", tenant)


def test_a_poison_step_stops_its_chain(
    celery_app: Any, worker: Worker, stub: VendorStub, tenant: int
) -> None:
    url = stub.script(f"after-poison-{tenant}", [200])
    steps = chain(
        celery_app.signature("tests.kill_own_process", kwargs={"tenant_id": tenant}),
        celery_app.signature("tests.fetch_vendor", args=[url], kwargs={"tenant_id": tenant}),
    )
    last = steps.apply_async()
    entry_for(last.parent.id)
    later = fetch(celery_app, stub.script(f"sentinel-{tenant}", [200]), tenant)
    assert later.get(timeout=30)["status"] == 200  # sent after: the queue is first in, first out
    assert f"[{last.id}] received" not in worker.log_text(), "the chain went no further"
    assert stub.hits(f"after-poison-{tenant}") == []


def test_a_replay_that_is_not_sent_puts_everything_back(simulator: Simulator, tenant: int) -> None:
    source = enriched(simulator, tenant, n=2)
    refused = external_ids(tenant, source)[:1]
    simulator.set_fault(vendor="crm", tenant=tenant, reject_records=refused)
    sync = finished(enqueue_crm_sync(tenant, run_id=source.run.id))
    failed = [(i.id, i.degraded_reasons) for i in sync.items if i.status == "failed"]
    assert [reason for _, reason in failed] == ["CRM_REJECTED:CLIENT_ERROR"]

    reopened = reopen_items(sync.run.id)
    assert [i.id for i in reopened] == [failed[0][0]]
    assert finished_or_open(sync.run.id).run.status == "running"
    put_back(reopened, [])  # as a replay does when the broker refuses its message
    after = finished(sync.run.id)
    assert (after.run.status, after.run.items_done) == ("degraded", after.run.items_total)
    assert [(i.id, i.degraded_reasons) for i in after.items if i.status == "failed"] == failed
    assert replay_run(sync.run.id, tenant_id=tenant) == 1, "and a later replay can go ahead"


def test_a_late_report_of_a_replayed_death_leaves_the_replay_alone(
    simulator: Simulator, tenant: int
) -> None:
    source = enriched(simulator, tenant, n=1)
    companies = [int(i.item_key.split(":")[1]) for i in source.items]
    keys = [f"contact:{cid}" for cid in contact_ids_of_companies(tenant, companies)]
    sync_id = runs.create_run(tenant, RunKind.CRM_SYNC, keys, parent_run_id=source.run.id)
    report = {
        "task_id": f"late-{uuid.uuid4().hex}",
        "task_name": "tasks.crm_sync.sync_run",
        "args": [str(sync_id)],
        "kwargs": {},
        "path": "failure",
        "error_code": "STEP_ERROR",
        "message": "as if it had died",
    }
    entry_id = dead_letters.record(**report)
    assert finished(sync_id).run.items_dead == len(keys) > 0
    reopen_items(sync_id)  # what a replay does first...
    dead_letters.claim_for_replay(entry_id, "replay-task")  # ...with the entry claimed
    dead_letters.record(**report)  # Celery's second report of the same death, late
    view = finished_or_open(sync_id)
    assert view.run.status == "running", "the replayed items were not killed again"
    assert dead_letters.get_entry(entry_id).status == "replayed"


def finished_or_open(run_id: Any) -> Any:
    view = runs.get_run(run_id)
    assert view is not None
    return view
