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

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.cli.common import (
    EXIT_FAILED,
    SECONDS,
    example,
    made_folder,
    safe_url,
    stages_option,
)
from pipeline.errors import DependencyUnavailableError

CONTACT_VENDOR = "apify_linkedin"


@click.command(
    short_help="Two tenants, one failing vendor: watch it cope.",
    epilog=example(
        "pipeline demo",
        "pipeline demo --companies 50 --then crm_sync,export",
        "BROKER_URL=redis://... DATABASE_URL=postgresql+psycopg2://... pipeline demo",
    ),
)
@click.option(
    "--companies",
    metavar="N",
    type=click.IntRange(1, 10_000),
    default=200,
    show_default=True,
    help="Companies per tenant.",
)
@click.option(
    "--timeout",
    metavar="SECONDS",
    type=SECONDS,
    default=600.0,
    show_default=True,
    help="Seconds before the demo gives up (exit 1).",
)
@click.option(
    "--then",
    default="",
    metavar="STAGES",
    help="Stages after enrichment, comma-separated: crm_sync, export.",
)
@click.option(
    "--keep-logs",
    type=click.Path(file_okay=False, path_type=Path),
    callback=made_folder,
    help="Keep demo.log (and worker.log) in this folder; by default they live in a "
    "temporary folder removed at exit.",
)
def demo(companies: int, timeout: float, then: str, keep_logs: Path | None) -> int:
    """Two tenants, one contact vendor failing for one of them: watch the pipeline cope.
    Embedded (nothing to run first) unless BROKER_URL and DATABASE_URL are set.
    Exit 1 if it timed out or tenant B saw tenant A's outage."""
    from pipeline.enqueue import check_stages
    from pipeline.simulator import Simulator

    console = Console()
    stages = check_stages(stages_option(then))
    if stages and not os.environ.get("PIPELINE_SECRET_KEY"):
        from cryptography.fernet import Fernet

        os.environ["PIPELINE_SECRET_KEY"] = Fernet.generate_key().decode()  # this demo only
    with (
        tempfile.TemporaryDirectory(prefix="pipeline-demo-", ignore_cleanup_errors=True) as tmp,
        Simulator(port=0, seed=2026) as sim,
    ):
        workdir = Path(tmp)
        logs = keep_logs or workdir
        os.environ["VENDOR_BASE_URL"] = sim.url
        with logging_to(logs / "demo.log"), running(console, workdir, logs):
            return scenario(console, sim, companies, timeout, stages)


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Our logs into `path` while the demo runs (the terminal shows the progress), and
    back to stderr after, so nothing writes into a file that is gone."""
    from pipeline.logs import configure_logging

    with path.open("a") as stream:
        configure_logging("WARNING", json=True, stream=stream)
        try:
            yield
        finally:
            configure_logging("WARNING", json=True)


@contextlib.contextmanager
def running(console: Console, workdir: Path, logs: Path) -> Iterator[None]:
    """A worker (and the database it uses) for the demo's length; stopped, and every
    connection to a database in `workdir` closed, however the demo ends."""
    from pipeline.db.engine import dispose_engines

    stop_worker = start_everything(console, workdir, logs)
    try:
        yield
    finally:
        stop_worker()
        dispose_engines()
        if logs != workdir:
            console.print(f"[dim]logs: {logs}[/dim]")


def start_everything(console: Console, workdir: Path, logs: Path) -> Callable[[], None]:
    from pipeline import embedded
    from pipeline.db.migrate import upgrade

    if embedded.services_configured():
        settings = embedded.reload_settings()
        console.print(
            f"[bold]mode: services[/bold] — broker {safe_url(settings.broker_url)}, "
            f"database {safe_url(settings.database_url)}, a celery worker subprocess"
        )
        upgrade(settings.database_url)
        return worker_subprocess(logs)
    settings = embedded.use_embedded(workdir / "demo.db")
    console.print(
        "[bold]mode: embedded[/bold] — in-process broker and worker (4 threads), breakers in "
        f"memory, runs in {workdir / 'demo.db'} (set BROKER_URL and DATABASE_URL to use "
        "Redis + Postgres)"
    )
    upgrade(settings.database_url)
    return embedded.start_worker(concurrency=4)


def worker_subprocess(logs: Path) -> Callable[[], None]:
    from workers.app import app

    log = (logs / "worker.log").open("w")
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

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[name], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            raise DependencyUnavailableError(
                "the demo's worker did not start (is the broker up? `pipeline check`); "
                "--keep-logs DIR keeps its worker.log"
            )

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
    from pipeline.cli.demo_report import report

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
    from pipeline.db.models import FINISHED_RUN_STATUSES as closed
    from pipeline.db.models import Run

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
    from pipeline.db.models import FINISHED_RUN_STATUSES
    from pipeline.runs import get_run

    views = [get_run(run_id) for run_id in run_ids.values()]
    return all(v is not None and v.run.status in FINISHED_RUN_STATUSES for v in views)
