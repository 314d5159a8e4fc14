"""`pipeline runs list|show`: find runs (stuck or degraded ones among them) and look
into one. The query is the core's (`pipeline.run_listing`); this only renders it."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Column, Table

from pipeline.cli.common import EXIT_OK, SINCE, TENANT, example, limit_option
from pipeline.db.models import RunKind, RunStatus

STATUS_STYLE = {"succeeded": "green", "degraded": "yellow", "failed": "red"}


@click.group(epilog=example("pipeline runs list --stuck", "pipeline runs show 3f2a9c1e"))
def runs() -> None:
    """Runs: list them with filters, show one."""


@runs.command(
    "list",
    epilog=example(
        "pipeline runs list --stuck",
        "pipeline runs list --tenant 7 --status degraded --status failed --since 24h",
        "pipeline runs list --kind export --limit 200 --json",
    ),
)
@click.option("--tenant", type=TENANT, help="Only this tenant's runs.")
@click.option(
    "--status",
    "statuses",
    type=click.Choice([s.value for s in RunStatus]),
    multiple=True,
    help="Only runs in this state; repeat for several.",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice([k.value for k in RunKind]),
    multiple=True,
    help="Only runs of this kind; repeat for several.",
)
@click.option(
    "--stuck",
    is_flag=True,
    help="Only runs with an open item that has not moved for its kind's RECONCILE_LEASE_S "
    "(what the reconciler re-drives as lost).",
)
@click.option(
    "--since", type=SINCE, help="Only runs created since: an age (2h, 7d) or an ISO date/time."
)
@limit_option(", newest first")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, full detail.")
def list_runs(
    tenant: int | None,
    statuses: tuple[str, ...],
    kinds: tuple[str, ...],
    stuck: bool,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> int:
    """Runs, newest first: id, tenant, kind, status, items, reasons, and whether stuck."""
    from pipeline.run_listing import RunFilter, find_runs

    found = find_runs(
        RunFilter(
            tenant_id=tenant,
            statuses=statuses,
            kinds=kinds,
            since=since,
            stuck=stuck,
            limit=limit,
        )
    )
    if as_json:
        for listed in found:
            click.echo(json.dumps(listed.as_dict(), sort_keys=True))
        return EXIT_OK
    if not found:
        click.echo("no runs match")
        return EXIT_OK
    table = Table(
        Column("run", no_wrap=True),
        "tenant",
        "kind",
        "status",
        "items ok/degr/fail/dead of all",
        "created (UTC)",
        "stuck",
        "reasons",
        box=None,
    )
    for listed in found:
        run = listed.run
        counts = (
            f"{run.items_succeeded}/{run.items_degraded}/{run.items_failed}/{run.items_dead}"
            f" of {run.items_total}"
        )
        stuck_note = (
            f"{listed.overdue_items} items, unmoved since {_moment(listed.oldest_move_at)}"
            if listed.stuck
            else ""
        )
        table.add_row(
            str(run.id),
            str(run.tenant_id),
            run.kind,
            f"[{STATUS_STYLE.get(run.status, 'bold')}]{run.status}[/]",
            counts,
            _moment(run.created_at),
            stuck_note,
            (run.degraded_reasons or "").replace(",", ", "),
        )
    from pipeline.cli.render import console

    console().print(table)
    return EXIT_OK


@runs.command(epilog=example("pipeline runs show 3f2a9c1e-0b7d-4c1e-9a55-2f7d0c9e1b42"))
@click.argument("run_id", metavar="RUN_ID")
def show(run_id: str) -> int:
    """A run (its id, or a unique prefix of it): items and reasons, vendor calls, what
    healed, is deferred or was re-driven."""
    from pipeline.cli.render import console, run_details
    from pipeline.run_details import read_run_details
    from pipeline.run_listing import resolve_run_id

    found = resolve_run_id(run_id, field="RUN_ID")
    details = read_run_details(found)
    if details is None:  # deleted since
        raise click.UsageError(f"no run {found}")
    console().print(run_details(details))
    return EXIT_OK


def _moment(at: datetime | None) -> str:
    from pipeline.cli.render import moment

    return moment(at)
