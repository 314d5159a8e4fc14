"""Operations: `pipeline check`, `pipeline db upgrade`, `pipeline reconcile`."""

from __future__ import annotations

import json

import click

from pipeline.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    TENANT,
    WORKER_COMMAND,
    example,
    safe_url,
)


@click.group(epilog=example("pipeline db upgrade", "pipeline db upgrade --url sqlite:///x.db"))
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command(epilog=example("pipeline db upgrade"))
@click.option("--url", metavar="URL", help="Database URL (default: DATABASE_URL).")
def upgrade(url: str | None) -> int:
    """Apply every pending Alembic migration (safe to repeat)."""
    from pipeline.db.migrate import upgrade as apply
    from pipeline.settings import get_settings

    url = url or get_settings().database_url
    apply(url)
    click.echo(f"database at {safe_url(url)} is at the latest revision")
    return EXIT_OK


@click.command(
    short_help="Reach every dependency; is the database migrated?", epilog=example("pipeline check")
)
def check() -> int:
    """Validate settings and reach Redis, the broker and the database (migrated?); say
    whether a worker answers. Exit 3 if a dependency is down or the database is behind."""
    import redis
    import sqlalchemy

    from pipeline.db.engine import engine_for
    from pipeline.db.migrate import UPGRADE_HINT, pending_migrations
    from pipeline.settings import get_settings

    settings = get_settings()
    failures = 0
    for name, url in (("redis", settings.redis_url), ("broker", settings.broker_url)):
        if url.startswith("memory://"):
            click.echo(f"ok    {name} {url} (in-process)")
            continue
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
            click.echo(f"ok    {name} {safe_url(url)}")
        except redis.RedisError as exc:
            failures += 1
            click.echo(f"FAIL  {name} {safe_url(url)}: {type(exc).__name__}")
    database = safe_url(settings.database_url)
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        pending = pending_migrations(settings.database_url)
        if pending:
            failures += 1
            click.echo(
                f"FAIL  database {database}: {len(pending)} migrations pending; {UPGRADE_HINT}"
            )
        else:
            click.echo(f"ok    database {database} (migrated)")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        failures += 1
        click.echo(f"FAIL  database {database}: {type(exc).__name__}")
    if not failures:
        workers = live_workers()
        if workers:
            click.echo(f"ok    workers: {', '.join(workers)}")
        else:
            click.echo(f"--    workers: none answered; runs wait until one runs: {WORKER_COMMAND}")
    return EXIT_UNAVAILABLE if failures else EXIT_OK


def live_workers(timeout: float = 1.0) -> list[str]:
    """Names of the Celery workers that answer a ping within `timeout` (none: [])."""
    from workers.app import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # the broker cannot be asked: no worker can be seen either
        return []
    return sorted(name for reply in replies for name in reply)


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
