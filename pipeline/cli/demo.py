"""`pipeline demo` (`make demo`): two tenants, one contact vendor failing for one of them.

Starts the vendor simulator and a worker, enqueues an enrichment run for each of two
tenants, makes the contact vendor fail for tenant A only once it has answered half of A's
companies (a simulator fault with `skip`), shows a
progress bar per run, then a report: items by outcome and reason, calls per vendor, breaker
transitions per tenant, time taken — and checks that tenant B never saw `CIRCUIT_OPEN`.

Runs embedded (in-process broker and worker, SQLite, breakers in memory) unless
`BROKER_URL` and `DATABASE_URL` are set, in which case it uses those (Redis + Postgres)
and a `celery worker` subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.common import EXIT_FAILED, EXIT_OK, safe_url

CONTACT_VENDOR = "apify_linkedin"


def register(sub: Any) -> None:
    cmd = sub.add_parser("demo", help="two tenants, one failing vendor: watch the pipeline cope")
    cmd.add_argument("--companies", type=int, default=200, help="companies per tenant")
    cmd.add_argument("--timeout", type=float, default=600.0)
    cmd.add_argument("--then", default="", help="stages after enrichment: crm_sync,export")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.enqueue import check_stages
    from pipeline.simulator import Simulator

    console = Console()
    then = check_stages([s.strip() for s in args.then.split(",") if s.strip()])
    if then and not os.environ.get("PIPELINE_SECRET_KEY"):
        from cryptography.fernet import Fernet

        os.environ["PIPELINE_SECRET_KEY"] = Fernet.generate_key().decode()  # this demo only
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    with Simulator(port=0, seed=2026) as sim:
        os.environ["VENDOR_BASE_URL"] = sim.url
        stop_worker = start_everything(console, workdir)
        try:
            return scenario(console, sim, args.companies, args.timeout, then)
        finally:
            stop_worker()
            console.print(f"[dim]logs: {workdir / 'demo.log'}[/dim]")


def start_everything(console: Console, workdir: Path) -> Callable[[], None]:
    from pipeline import embedded
    from pipeline.db.migrate import upgrade
    from pipeline.logs import configure_logging

    configure_logging("WARNING", json=True, stream=(workdir / "demo.log").open("a"))
    if embedded.services_configured():
        settings = embedded.reload_settings()
        console.print(
            f"[bold]mode: services[/bold] — broker {safe_url(settings.broker_url)}, "
            f"database {safe_url(settings.database_url)}, a celery worker subprocess"
        )
        upgrade(settings.database_url)
        return worker_subprocess(workdir)
    settings = embedded.use_embedded(workdir / "demo.db")
    console.print(
        "[bold]mode: embedded[/bold] — in-process broker and worker (4 threads), breakers in "
        f"memory, runs in {workdir / 'demo.db'} (set BROKER_URL and DATABASE_URL to use "
        "Redis + Postgres)"
    )
    upgrade(settings.database_url)
    return embedded.start_worker(concurrency=4)


def worker_subprocess(workdir: Path) -> Callable[[], None]:
    from workers.app import app

    log = (workdir / "worker.log").open("w")
    name = f"demo-{os.getpid()}@localhost"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "--concurrency",
            "2",
            "--hostname",
            name,
            "--queues",
            "critical,default,export",
            "--loglevel",
            "WARNING",
        ],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[name], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the demo worker did not start; see {workdir / 'worker.log'}")

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

    return stop


def scenario(console: Console, sim: Any, companies: int, timeout: float, then: list[str]) -> int:
    from pipeline import enqueue_enrichment, runs

    base = int(time.time()) % 1_000_000 * 10  # fresh tenants: no state left from earlier demos
    tenants = {"A": base + 1, "B": base + 2}
    # Halfway through tenant A's contact lookups the vendor goes down — for tenant A only.
    # Scripted before the runs start, so every lookup counts towards the halfway mark.
    sim.set_fault(vendor=CONTACT_VENDOR, tenant=tenants["A"], status=503, skip=companies // 2)
    console.print(
        f"{CONTACT_VENDOR} will go down for tenant A after {companies // 2} lookups; "
        "tenant B keeps a healthy vendor"
    )
    for tenant in tenants.values():
        connect_crm_and_erp(sim, tenant)
    started = time.monotonic()
    run_ids = {
        label: enqueue_enrichment(
            tenant,
            [{"name": f"Company {n}", "domain": f"company-{n}.example"} for n in range(companies)],
            then=then,
        )
        for label, tenant in tenants.items()
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars = {
            label: progress.add_task(f"tenant {label} ({tenants[label]})", total=companies)
            for label in tenants
        }
        while True:
            states = {label: runs.progress(run_ids[label]) for label in tenants}
            for label, (done, total) in states.items():
                progress.update(bars[label], completed=done, total=total)
            if all(done == total for done, total in states.values()) and finished(run_ids):
                break
            if time.monotonic() - started > timeout:
                console.print("[red]the demo timed out; runs are still going[/red]")
                return EXIT_FAILED
            time.sleep(0.2)
    stages = wait_for_stages(run_ids, started + timeout)
    return report(console, sim, tenants, run_ids, stages, time.monotonic() - started)


def connect_crm_and_erp(sim: Any, tenant: int) -> None:
    """Each tenant's CRM and ERP on the simulator, and their credentials in the store."""
    from pipeline.credentials import put_credential

    if not os.environ.get("PIPELINE_SECRET_KEY"):
        return
    sim.register_crm_client(tenant, f"demo-{tenant}", f"demo-secret-{tenant}")
    put_credential(
        tenant, "crm", {"client_id": f"demo-{tenant}", "client_secret": f"demo-secret-{tenant}"}
    )
    sim.register_erp_user(tenant, f"odoo_{tenant}", "admin", f"demo-erp-{tenant}")
    put_credential(
        tenant, "erp", {"db": f"odoo_{tenant}", "login": "admin", "password": f"demo-erp-{tenant}"}
    )


def wait_for_stages(run_ids: dict[str, uuid.UUID], deadline: float) -> dict[str, list[Any]]:
    """The stage runs that followed each enrichment run, once each pipeline has settled:
    every run in it closed and handed off (a stopped pipeline settles early)."""
    from sqlalchemy import or_, select

    from pipeline.db.engine import session_scope
    from pipeline.db.models import Run

    closed = ("succeeded", "degraded", "failed")
    while True:
        with session_scope() as session:
            pipelines = {
                label: list(
                    session.scalars(
                        select(Run).where(or_(Run.id == first, Run.parent_run_id == first))
                    )
                )
                for label, first in run_ids.items()
            }
        settled = all(
            all(run.status in closed and run.handed_off_at is not None for run in pipeline)
            for pipeline in pipelines.values()
        )
        if settled or time.monotonic() > deadline:
            return {
                label: [r for r in pipeline if r.id != run_ids[label] and r.status in closed]
                for label, pipeline in pipelines.items()
            }
        time.sleep(0.2)


def finished(run_ids: dict[str, uuid.UUID]) -> bool:
    from pipeline.runs import get_run

    views = [get_run(run_id) for run_id in run_ids.values()]
    return all(v is not None and v.run.status in ("succeeded", "degraded", "failed") for v in views)


def report(
    console: Console,
    sim: Any,
    tenants: dict[str, int],
    run_ids: dict[str, uuid.UUID],
    stages: dict[str, list[Any]],
    took: float,
) -> int:
    from pipeline.db.breaker_events import breaker_events
    from pipeline.runs import get_run

    stats = sim.stats()
    outcome = Table(
        "tenant",
        "run",
        "status",
        "succeeded",
        "degraded",
        "failed",
        title="runs",
        title_justify="left",
    )
    why = Table(
        "tenant",
        "degradation reason",
        "items",
        title="why items are degraded",
        title_justify="left",
    )
    vendor_calls = Table(
        "tenant",
        *sorted(stats["calls"]),
        title="calls that reached each vendor",
        title_justify="left",
    )
    transitions = Table(
        "tenant", "vendor", "from", "to", "at", title="breaker transitions", title_justify="left"
    )
    circuit_open_for_b = 0
    for label, tenant in tenants.items():
        view = get_run(run_ids[label])
        if view is None:
            raise RuntimeError(f"run {run_ids[label]} vanished")
        reasons = Counter(r for i in view.items for r in i.degraded_reasons.split(",") if r)
        if label == "B":
            circuit_open_for_b = sum(n for r, n in reasons.items() if r.startswith("CIRCUIT_OPEN"))
        outcome.add_row(
            f"{label} ({tenant})",
            str(view.run.id)[:8],
            view.run.status,
            str(view.run.items_succeeded),
            str(view.run.items_degraded),
            str(view.run.items_failed),
        )
        for reason, n in reasons.most_common():
            why.add_row(label, reason, str(n))
        for stage in sorted(stages.get(label, []), key=lambda r: r.created_at):
            outcome.add_row(
                f"{label} → {stage.kind}",
                str(stage.id)[:8],
                stage.status + (" (export disabled)" if stage.export_disabled else ""),
                str(stage.items_succeeded),
                str(stage.items_degraded),
                str(stage.items_failed),
            )
        vendor_calls.add_row(
            label, *(str(stats["calls"][v].get(str(tenant), 0)) for v in sorted(stats["calls"]))
        )
        for event in breaker_events(tenant):
            transitions.add_row(
                label,
                event.vendor,
                event.from_state,
                event.to_state,
                event.at.strftime("%H:%M:%S.%f")[:-3],
            )
    for table in (outcome, why, vendor_calls, transitions):
        console.print(table)
    console.print(f"time taken: {took:.1f}s for {sum(1 for _ in tenants)} runs")
    if circuit_open_for_b:
        console.print(
            f"[red]tenant B has {circuit_open_for_b} CIRCUIT_OPEN reasons: isolation broken[/red]"
        )
        return EXIT_FAILED
    console.print(
        "[green]tenant B: no CIRCUIT_OPEN — tenant A's outage stayed with tenant A[/green]"
    )
    return EXIT_OK
