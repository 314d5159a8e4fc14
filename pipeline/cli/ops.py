"""Operations: `pipeline db upgrade`, `pipeline reconcile` (`pipeline check`: check.py)."""

from __future__ import annotations

import json

import click

from pipeline.cli.common import (
    EXIT_OK,
    TENANT,
    example,
    safe_url,
)


@click.group(epilog=example("pipeline db upgrade", "pipeline db upgrade --url sqlite:///x.db"))
def db() -> None:
    """The database schema (Alembic migrations)."""


def _database_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    from pipeline.settings import checked_database_url

    try:
        return None if url is None else checked_database_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@db.command(epilog=example("pipeline db upgrade"))
@click.option(
    "--url", metavar="URL", callback=_database_url, help="Database URL (default: DATABASE_URL)."
)
def upgrade(url: str | None) -> int:
    """Apply every pending Alembic migration (safe to repeat)."""
    from pipeline.db.migrate import upgrade as apply
    from pipeline.settings import get_settings

    url = url or get_settings().database_url
    apply(url)
    click.echo(f"database at {safe_url(url)} is at the latest revision")
    return EXIT_OK


@click.command(
    short_help="One reconciler pass now (re-drive lost work).",
    epilog=example("pipeline reconcile", "pipeline reconcile --tenant 7 --json"),
)
@click.option("--tenant", type=TENANT, help="Only this tenant's runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile(tenant: int | None, as_json: bool) -> int:
    """One reconciler pass now, as beat runs every RECONCILE_INTERVAL_S: re-drive lost
    work, close finished runs, make good lost stage hand-offs (e.g. after an outage)."""
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings
    from tasks.maintenance import reconciler

    configure_logging("WARNING", json=get_settings().log_json)  # stderr: stdout is the report
    report = reconciler().run(tenant_id=tenant)
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    elif report.skipped:
        click.echo("another reconciler pass is running; nothing done")
    else:
        redriven = ", ".join(f"{k} {n}" for k, n in sorted(report.redriven.items())) or "none"
        click.echo(f"resets found: {', '.join(report.resets) or 'none'}")
        click.echo(f"re-driven: {redriven}")
        click.echo(f"dead-lettered as stalled: {report.stalled}")
        click.echo(
            f"runs closed: {report.runs_closed}; stage hand-offs made good: {report.handoffs}"
        )
    return EXIT_OK
