"""`pipeline enrich|sync|export --wait` as README shows them: the installed script, a real
worker and the simulator; `--wait` follows the whole pipeline and its exit code says how
it ended (0 succeeded/degraded, 1 failed, 3 no worker, 4 timed out)."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
import redis

from pipeline.credentials import put_credential
from pipeline.simulator import Simulator
from tests.support.cli import csv_file, pipeline
from tests.support.runs import delete_runs_of
from tests.support.stack import own_redis_url
from tests.support.tenants import ready_tenant

RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def companies(tmp_path: Path, tenant: int, count: int = 2) -> Path:
    rows = "".join(f"Company {n},company-{n}-{tenant}.example\n" for n in range(count))
    return csv_file(tmp_path, "name,domain\n" + rows)


def enqueued_id(stdout: str) -> str:
    found = re.search(rf"enqueued (?:\w+ )?run ({RUN_ID.pattern})", stdout)
    assert found, stdout
    return found.group(1)


@pytest.mark.usefixtures("worker")
def test_enrich_then_stages_waits_for_the_last_stage_showing_each(
    simulator: Simulator, tmp_path: Path, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    result = pipeline(
        "enrich", "--tenant", str(tenant), "--file", str(companies(tmp_path, tenant)),
        "--then", "crm_sync,export", "--wait", "--timeout", "150",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = enqueued_id(result.stdout)
    stages = re.findall(rf"stage (\d): (\w+) run ({RUN_ID.pattern})", result.stdout)
    assert [(n, kind) for n, kind, _ in stages] == [
        ("1", "enrichment"),
        ("2", "crm_sync"),
        ("3", "export"),
    ]
    assert stages[0][2] == first
    for _, _, run_id in stages:  # each stage's details shown, with its full id
        assert f"run {run_id}" in result.stdout
    assert f"pipeline of run {first} finished: succeeded (3 stages)" in result.stdout
    assert len(simulator.erp_partners(tenant)) == 2
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.usefixtures("worker")
def test_sync_and_export_enqueue_and_wait_from_a_run_prefix(
    simulator: Simulator, tmp_path: Path, tenant: int
) -> None:
    """README: `pipeline sync --tenant 7 --run RUN_ID --wait`, then `pipeline export`."""
    ready_tenant(simulator, tenant)
    enriched = pipeline(
        "enrich", "--tenant", str(tenant), "--file", str(companies(tmp_path, tenant)), "--wait"
    )
    assert enriched.returncode == 0, enriched.stderr
    source = enqueued_id(enriched.stdout)

    synced = pipeline("sync", "--tenant", str(tenant), "--run", source[:13], "--wait")
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    sync_id = enqueued_id(synced.stdout)
    assert f"(from run {source})" in synced.stdout
    assert f"stage 1: crm_sync run {sync_id}" in synced.stdout
    assert f"pipeline of run {sync_id} finished: succeeded (1 stage)" in synced.stdout
    assert len(simulator.crm_contacts(tenant)) > 0

    exported = pipeline("export", "--tenant", str(tenant), "--run", source, "--wait")
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    export_id = enqueued_id(exported.stdout)
    assert f"pipeline of run {export_id} finished: succeeded (1 stage)" in exported.stdout
    assert len(simulator.erp_partners(tenant)) == 2

    queued = pipeline("export", "--tenant", str(tenant), "--run", source)  # no --wait
    assert queued.returncode == 0 and "enqueued export run" in queued.stdout

    other_tenant = pipeline("sync", "--tenant", str(tenant + 1), "--run", source)
    assert other_tenant.returncode == 2
    assert f"no run of tenant {tenant + 1} has that id" in other_tenant.stderr


@pytest.mark.usefixtures("worker")
def test_a_failed_stage_exits_1_and_a_timeout_exits_4(
    simulator: Simulator, tmp_path: Path, tenant: int
) -> None:
    ready_tenant(simulator, tenant)
    put_credential(tenant, "crm", {"client_id": f"c-{tenant}", "client_secret": "wrong"})
    failed = pipeline(
        "enrich", "--tenant", str(tenant), "--file", str(companies(tmp_path, tenant, 1)),
        "--then", "crm_sync,export", "--wait", "--timeout", "150",
    )  # fmt: skip
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "stage 2: crm_sync" in failed.stdout and "stage 3" not in failed.stdout
    assert "finished: failed (2 stages)" in failed.stdout

    simulator.set_fault(vendor="crawler", tenant=tenant, latency_ms=4000)
    try:
        slow = pipeline(
            "enrich", "--tenant", str(tenant), "--file", str(companies(tmp_path, tenant, 1)),
            "--wait", "--timeout", "0.5",
        )  # fmt: skip
    finally:
        simulator.clear_fault("crawler", tenant)
    assert slow.returncode == 4, slow.stdout + slow.stderr
    run_id = enqueued_id(slow.stdout)
    assert f"run {run_id} is still" in slow.stderr and "it goes on" in slow.stderr
    assert len(slow.stderr.strip().splitlines()) == 1


def test_waiting_with_no_worker_says_how_to_start_one(
    integration_env: dict[str, str], tmp_path: Path, tenant: int
) -> None:
    """A broker no worker listens to: enqueued, then exit 3 naming README's command."""
    side = own_redis_url(1)
    env = {**os.environ, "BROKER_URL": side}
    try:
        result = pipeline(
            "enrich", "--tenant", str(tenant), "--file", str(companies(tmp_path, tenant, 1)),
            "--wait", env=env,
        )  # fmt: skip
    finally:
        redis.Redis.from_url(side).flushdb()
        delete_runs_of(tenant)  # never to be worked: no later reconciler pass may find it
    assert result.returncode == 3, result.stdout + result.stderr
    run_id = enqueued_id(result.stdout)
    assert uuid.UUID(run_id)
    assert f"no worker answered, so run {run_id} waits on its queue" in result.stderr
    assert "celery -A workers.app worker --queues critical,default,export" in result.stderr


@pytest.mark.usefixtures("worker")
def test_quiet_prints_only_the_run_id_for_a_script_to_keep(
    simulator: Simulator, tmp_path: Path, tenant: int
) -> None:
    """README: `export RUN_ID=$(pipeline enrich ... --wait --quiet)`."""
    ready_tenant(simulator, tenant)
    file = str(companies(tmp_path, tenant))
    result = pipeline(
        "enrich", "--tenant", str(tenant), "--file", file, "--wait", "--quiet", "--timeout", "60"
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    assert RUN_ID.fullmatch(run_id), result.stdout
    shown = pipeline("runs", "show", run_id)
    assert shown.returncode == 0 and "succeeded" in shown.stdout, "it waited for the end"


@pytest.mark.usefixtures("worker")
def test_check_waits_for_a_worker_and_gives_up_with_exit_3(
    integration_env: dict[str, str],
) -> None:
    ready = pipeline("check", "--wait", "30")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ok    workers: " in ready.stdout
    side = own_redis_url(1)  # a broker no worker listens to
    try:
        alone = pipeline("check", "--wait", "1", env={**os.environ, "BROKER_URL": side})
    finally:
        redis.Redis.from_url(side).flushdb()
    assert alone.returncode == 3, alone.stdout + alone.stderr
    assert "workers: none answered" in alone.stdout
    assert "celery -A workers.app worker" in alone.stdout
    once = pipeline("check", env={**os.environ, "BROKER_URL": side})
    assert once.returncode == 0, "without --wait a missing worker is news, not a failure"


@pytest.mark.usefixtures("worker")
def test_what_the_core_logs_stays_off_stdout(tmp_path: Path, tenant: int) -> None:
    """`run.replayed` is logged at info by the core: not on stdout, which a script reads."""
    nothing = csv_file(tmp_path, 'name,domain\n" "," "\n')  # one DATA_EMPTY item
    enriched = pipeline("enrich", "--tenant", str(tenant), "--file", str(nothing), "--wait", "-q")
    assert enriched.returncode == 1, enriched.stderr  # its only item failed: the run failed
    run_id = enriched.stdout.strip()
    replayed = pipeline("dlq", "replay", "--run", run_id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [f"re-running 1 dead or failed items of run {run_id}"]
    assert "run.replayed" not in replayed.stderr, "info lines are not shown at all"
