"""`pipeline dlq list|show|replay|purge`: the dead-letter store, from a shell.

`replay ID` re-sends one entry; `replay --run R` re-runs a run's dead and failed items;
`replay --all --tenant T` does that for every run of the tenant with dead letters.
`purge --older-than 30d` forgets entries whose last failure is older than that.
"""

from __future__ import annotations

import json
from datetime import timedelta

import click

from pipeline.cli.common import AGE, EXIT_OK, TENANT, example, limit_option
from pipeline.errors import InputError

ENTRY_ID = click.IntRange(1, 2**63 - 1)


@click.group(epilog=example("pipeline dlq list --tenant 7", "pipeline dlq replay --run 3f2a9c1e"))
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("list", epilog=example("pipeline dlq list --tenant 7 --status dead"))
@click.option("--tenant", type=TENANT, help="Only this tenant's entries.")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this run's (id or unique prefix).")
@click.option(
    "--status", type=click.Choice(["dead", "replayed"]), help="Only entries in this state."
)
@limit_option("")
def list_entries(tenant: int | None, run_id: str | None, status: str | None, limit: int) -> int:
    """Dead letters, newest first: id, status, when, tenant, task, path, error, run."""
    from pipeline import dead_letters
    from pipeline.run_listing import resolve_run_id

    entries = dead_letters.list_entries(
        tenant_id=tenant,
        run_id=None if run_id is None else resolve_run_id(run_id, field="--run"),
        status=status,
        limit=limit,
    )
    for e in entries:
        click.echo(
            f"{e.id}\t{e.status}\t{e.last_failed_at:%Y-%m-%d %H:%M:%S}\ttenant={e.tenant_id}\t"
            f"{e.task_name}\t{e.path}\t{e.error_code}\truns={e.run_id or '-'}"
        )
    if not entries:
        click.echo("no dead letters")
    return EXIT_OK


@dlq.command(epilog=example("pipeline dlq show 42"))
@click.argument("entry_id", metavar="ID", type=ENTRY_ID)
def show(entry_id: int) -> int:
    """One dead letter, everything about it, with its traceback."""
    from pipeline import dead_letters

    e = dead_letters.get_entry(entry_id)
    fields = {
        "id": e.id,
        "status": e.status,
        "task": e.task_name,
        "task_id": e.task_id,
        "path": e.path,
        "error_code": e.error_code,
        "message": e.message,
        "tenant_id": e.tenant_id,
        "run_id": str(e.run_id) if e.run_id else None,
        "item_id": e.item_id,
        "attempts": e.attempts,
        "failures": e.failures,
        "first_failed_at": e.first_failed_at.isoformat(),
        "last_failed_at": e.last_failed_at.isoformat(),
        "correlation_id": e.correlation_id,
        "args": e.args,
        "kwargs": e.kwargs,
        "replay_task_id": e.replay_task_id,
    }
    click.echo(json.dumps(fields, indent=2, default=str))
    if e.traceback:
        click.echo(e.traceback)
    return EXIT_OK


@dlq.command(
    epilog=example(
        "pipeline dlq replay 42",
        "pipeline dlq replay --run 3f2a9c1e",
        "pipeline dlq replay --all --tenant 7",
    )
)
@click.argument("entry_id", metavar="[ID]", type=ENTRY_ID, required=False)
@click.option("--run", "run_id", metavar="RUN_ID", help="Re-run this run's dead and failed items.")
@click.option("--all", "every", is_flag=True, help="Every dead letter of --tenant.")
@click.option("--tenant", type=TENANT, help="The tenant (needed with --all; a check otherwise).")
def replay(entry_id: int | None, run_id: str | None, every: bool, tenant: int | None) -> int:
    """Re-send one entry as its original task, or re-run a run's (or a tenant's) dead and
    failed items. Give exactly one of ID, --run, --all."""
    from pipeline.replay import replay_entry, replay_run, replay_tenant
    from pipeline.run_listing import resolve_run_id

    if sum((entry_id is not None, run_id is not None, every)) != 1:
        raise click.UsageError("give exactly one of ID, --run or --all")
    if every:
        if tenant is None:
            raise InputError("replay --all needs --tenant")
        click.echo(f"replayed {replay_tenant(tenant)} items and entries of tenant {tenant}")
    elif run_id is not None:
        found = resolve_run_id(run_id, field="--run", tenant_id=tenant)
        count = replay_run(found, tenant_id=tenant)
        click.echo(f"re-running {count} dead or failed items of run {found}")
    else:
        assert entry_id is not None
        task_id = replay_entry(entry_id, tenant_id=tenant)
        click.echo(f"replayed dead letter {entry_id} as task {task_id}")
    return EXIT_OK


@dlq.command(epilog=example("pipeline dlq purge --older-than 30d"))
@click.option(
    "--older-than", "older_than", type=AGE, required=True, metavar="AGE", help="30d, 12h, 15m, 90s."
)
def purge(older_than: timedelta) -> int:
    """Forget entries whose last failure is older than AGE."""
    from pipeline import dead_letters

    click.echo(f"purged {dead_letters.purge(older_than)} dead letters")
    return EXIT_OK
