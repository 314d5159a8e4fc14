"""Processes killed mid-run: the worker's main process, or one pool child while a given stage
runs (SIGKILL: no clean-up, as the OOM killer or a node failure would)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from chaos.processes import group_alive, kill_group, say
from chaos.trial import Scenario, Trial

ENRICHMENT_STEPS = {
    f"tasks.enrichment.{step}"
    for step in (
        "start_run",
        "crawl_site",
        "search_web",
        "find_contacts",
        "verify_emails",
        "record_item",
    )
}
# Slow enough that a sync / an export takes seconds (and stays under the read timeout).
CONTACTS_LATENCY_MS = 100
CRM_LATENCY_MS = 300
ERP_LATENCY_MS = 20
FIND_PID_S = 120
KILL_ATTEMPTS = 5


def nothing(trial: Trial) -> None:
    """The control: no fault at all."""


def kill_worker_main(trial: Trial) -> None:
    """Kill the main process while its pool runs steps of the trial's runs: the messages it
    holds unacknowledged (running and prefetched) must come back to another worker."""
    trial.mid_enrichment()
    old = trial.stack.worker
    deadline = time.monotonic() + FIND_PID_S
    while trial.stack.pool_pid_running(ENRICHMENT_STEPS, trial.firsts) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the pool was never seen running an enrichment step")
        time.sleep(0.05)
    pid = trial.stack.kill_worker_main()
    say(f"killed the worker's main process {pid}")
    trial.stack.start_worker()
    # The orphaned pool children have lost their parent; give them a moment to notice.
    deadline = time.monotonic() + 5
    while group_alive(old.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(old.proc.pid):
        trial.note("orphaned pool children outlived their main; killed")
    kill_group(old.proc, grace_s=1)
    trial.note(f"main {pid} SIGKILLed, new worker started")


def kill_child_running(trial: Trial, names: set[str], kind: str) -> None:
    """SIGKILL the pool process running one of `names` for this trial's runs of `kind`.

    `inspect active` is a snapshot: the child may have finished the task by the time the
    signal lands. The kill counts only if the worker then reports a job lost with its
    process (`WorkerLostError`); otherwise the next running one is killed."""
    deadline = time.monotonic() + FIND_PID_S
    for attempt in range(1, KILL_ATTEMPTS + 1):
        while time.monotonic() < deadline:
            runs = trial.firsts if kind == "enrichment" else trial.observer.run_ids(kind)
            pid = trial.stack.pool_pid_running(names, runs) if runs else None
            if pid is not None:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"no pool process was seen running {kind}")
        log = trial.stack.worker.log_path
        offset = log.stat().st_size
        os.kill(pid, signal.SIGKILL)
        if _job_lost(log, offset):
            trial.note(f"pool child {pid} SIGKILLed mid-{kind} (attempt {attempt})")
            return
    raise RuntimeError(f"{KILL_ATTEMPTS} pool children killed, none while running {kind}")


def _job_lost(log: Path, offset: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with open(log, "rb") as text:
            text.seek(offset)
            if b"WorkerLostError" in text.read():
                return True
        time.sleep(0.1)
    return False


def slow_contacts(trial: Trial) -> None:
    """Contact look-ups of the first tenant take a while: the pool is busy when killed."""
    trial.admin.set_fault(
        vendor="apify_linkedin", tenant=trial.tenants[0], latency_ms=CONTACTS_LATENCY_MS
    )


def kill_child_mid_enrichment(trial: Trial) -> None:
    trial.mid_enrichment()
    kill_child_running(trial, ENRICHMENT_STEPS, "enrichment")


def slow_crm(trial: Trial) -> None:
    trial.admin.set_fault(vendor="crm", tenant=trial.tenants[0], latency_ms=CRM_LATENCY_MS)


def kill_child_mid_sync(trial: Trial) -> None:
    tenant = trial.tenants[0]
    wait = time.monotonic() + FIND_PID_S
    while not trial.admin.crm_contacts(tenant) and time.monotonic() < wait:
        time.sleep(0.1)  # the sync has written its first batch: it is mid-way
    kill_child_running(trial, {"tasks.crm_sync.sync_run"}, "crm_sync")


def slow_erp(trial: Trial) -> None:
    trial.admin.set_fault(vendor="erp", tenant=trial.tenants[0], latency_ms=ERP_LATENCY_MS)


def kill_child_mid_export(trial: Trial) -> None:
    tenant = trial.tenants[0]
    wait = time.monotonic() + FIND_PID_S
    while not trial.admin.erp_partners(tenant) and time.monotonic() < wait:
        time.sleep(0.1)  # the export has written its first partner: it is mid-way
    kill_child_running(trial, {"tasks.export.export_run"}, "export")


BASELINE = Scenario("baseline", "no fault: the control", nothing)
WORKER_MAIN_KILL = Scenario(
    "worker-main-kill",
    "SIGKILL the worker's main process mid-enrichment",
    kill_worker_main,
    prepare=slow_contacts,
)
CHILD_KILL_ENRICHMENT = Scenario(
    "child-kill-enrichment",
    "SIGKILL a pool child running an enrichment step",
    kill_child_mid_enrichment,
    prepare=slow_contacts,
)
CHILD_KILL_SYNC = Scenario(
    "child-kill-sync",
    "SIGKILL the pool child running a CRM sync mid-way",
    kill_child_mid_sync,
    prepare=slow_crm,
)
CHILD_KILL_EXPORT = Scenario(
    "child-kill-export",
    "SIGKILL the pool child running an ERP export mid-way",
    kill_child_mid_export,
    prepare=slow_erp,
)
