"""`pipeline enrich`, `pipeline sync`, `pipeline export`: start runs, and with `--wait`
follow them to the end of their pipeline (`pipeline.cli.wait`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.cli.common import EXIT_OK, SECONDS, TENANT, example, stages_option

WAIT_HELP = (
    "Follow the run, and each stage after it, until the pipeline ends; show each run. "
    "Exit 0 succeeded or degraded, 1 failed, 3 no worker, 4 timed out."
)
TIMEOUT_HELP = "Seconds --wait waits before giving up (exit 4; the work goes on)."


F = TypeVar("F", bound=Callable[..., Any])


def wait_options(command: F) -> F:
    """`--wait` and `--timeout`, alike on every command that enqueues."""
    command = click.option(
        "--timeout",
        metavar="SECONDS",
        type=SECONDS,
        default=600.0,
        show_default=True,
        help=TIMEOUT_HELP,
    )(command)
    command = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="Print only the run id (with --wait: once the pipeline ended), for "
        "RUN_ID=$(pipeline ...).",
    )(command)
    return click.option("--wait", is_flag=True, help=WAIT_HELP)(command)


@click.command(
    short_help="Enqueue an enrichment run from a CSV file.",
    epilog=example(
        "pipeline enrich --tenant 7 --file companies.csv --wait",
        "pipeline enrich --tenant 7 --file companies.csv --then crm_sync,export --wait",
    ),
)
@click.option("--tenant", type=TENANT, required=True, help="The tenant the companies belong to.")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="CSV with a header of name, domain (or id, for a company the tenant has).",
)
@click.option(
    "--then",
    default="",
    metavar="STAGES",
    help="Stages to run after it, comma-separated, in order: crm_sync, export.",
)
@wait_options
def enrich(tenant: int, path: Path, then: str, wait: bool, quiet: bool, timeout: float) -> int:
    """Enqueue an enrichment run over the companies in a CSV file; prints its run id.

    A row with neither name nor domain becomes an item that fails with
    DATA_EMPTY:no_domain_name; anything else wrong in the file stops with exit 2,
    naming the line."""
    from pipeline import enqueue_enrichment
    from pipeline.cli.companies_csv import read_companies

    stages = stages_option(then)
    run_id = enqueue_enrichment(tenant, read_companies(path), then=stages)
    said = f"enqueued run {run_id}" + (f" (then {', '.join(stages)})" if stages else "")
    return _announce_and_wait(run_id, said, wait=wait, quiet=quiet, timeout=timeout)


def _announce_and_wait(
    run_id: uuid.UUID, said: str, *, wait: bool, quiet: bool, timeout: float
) -> int:
    """Say what was enqueued (only its id if `quiet`), then follow it if asked to."""
    if not quiet:
        click.echo(said)
    code = EXIT_OK
    if wait:
        from pipeline.cli.wait import wait_for_pipeline

        code = wait_for_pipeline(run_id, timeout, quiet=quiet)
    if quiet:
        click.echo(str(run_id))
    return code


def _stage_command(kind: str, summary: str, queue: str) -> click.Command:
    """`sync` and `export`: the same options, a different stage."""

    def run_stage(tenant: int, run: str, wait: bool, quiet: bool, timeout: float) -> int:
        from pipeline import enqueue_crm_sync, enqueue_export
        from pipeline.run_listing import resolve_run_id

        source = resolve_run_id(run, field="--run", tenant_id=tenant)
        start = enqueue_crm_sync if kind == "sync" else enqueue_export
        run_id = start(tenant, run_id=source)
        said = f"enqueued {kind} run {run_id} (from run {source})"
        return _announce_and_wait(run_id, said, wait=wait, quiet=quiet, timeout=timeout)

    run_stage.__doc__ = f"{summary} (queue `{queue}`); prints the new run's id."
    command = click.option(
        "--run",
        required=True,
        metavar="RUN_ID",
        help="The enrichment run it works from (its id, or a unique prefix of it).",
    )(wait_options(run_stage))
    command = click.option(
        "--tenant", type=TENANT, required=True, help="The tenant whose run it is."
    )(command)
    return click.command(
        kind,
        short_help=f"{summary.split(' an ')[0]} from an enrichment run.",
        epilog=example(f"pipeline {kind} --tenant 7 --run 3f2a9c1e --wait"),
    )(command)


sync = _stage_command(
    "sync", "Push the contacts an enrichment run found to the tenant's CRM", "critical"
)
export = _stage_command(
    "export", "Export the companies an enrichment run processed to the tenant's ERP", "export"
)
