"""`pipeline check [--wait SECONDS]`: is every dependency reachable, the database
migrated, a worker there?

`--wait` repeats the checks until all pass and a worker answers, so a script (README's
walkthrough, a container's start-up) can go on the moment the stack is ready instead of
sleeping a guess.
"""

from __future__ import annotations

import time

import click

from pipeline.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    SECONDS,
    WORKER_COMMAND,
    example,
    safe_url,
)

POLL_S = 0.5


@click.command(
    short_help="Reach every dependency; is the database migrated?",
    epilog=example("pipeline check", "pipeline check --wait 60   # until a worker answers too"),
)
@click.option(
    "--wait",
    "wait_s",
    metavar="SECONDS",
    type=SECONDS,
    help="Check again until everything answers, a worker too, for up to this long.",
)
def check(wait_s: float | None) -> int:
    """Validate settings and reach Redis, the broker and the database (migrated?); say
    whether a worker answers. Exit 3 if a dependency is down or the database is behind
    (with --wait: also if no worker answered in time)."""
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        lines, failures = dependency_report()
        workers = live_workers() if not failures else []
        ready = not failures and (workers or wait_s is None)
        if ready or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    for line in lines:
        click.echo(line)
    if failures:
        return EXIT_UNAVAILABLE
    if workers:
        click.echo(f"ok    workers: {', '.join(workers)}")
        return EXIT_OK
    click.echo(f"--    workers: none answered; runs wait until one runs: {WORKER_COMMAND}")
    return EXIT_OK if wait_s is None else EXIT_UNAVAILABLE


def dependency_report() -> tuple[list[str], int]:
    """One line per dependency, and how many failed."""
    import redis
    import sqlalchemy
    from kombu.exceptions import KombuError

    from pipeline.db.engine import engine_for
    from pipeline.db.migrate import UPGRADE_HINT, pending_migrations
    from pipeline.settings import get_settings

    settings = get_settings()
    lines: list[str] = []
    failures = 0
    for name, url in (("redis", settings.redis_url), ("broker", settings.broker_url)):
        if url.startswith("memory://"):
            lines.append(f"ok    {name} {url} (in-process)")
            continue
        try:
            _reach(url)
            lines.append(f"ok    {name} {safe_url(url)}")
        except (redis.RedisError, KombuError) as exc:
            failures += 1
            lines.append(f"FAIL  {name} {safe_url(url)}: {type(exc).__name__}")
    database = safe_url(settings.database_url)
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        pending = pending_migrations(settings.database_url)
        if pending:
            failures += 1
            lines.append(
                f"FAIL  database {database}: {len(pending)} migrations pending; {UPGRADE_HINT}"
            )
        else:
            lines.append(f"ok    database {database} (migrated)")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        failures += 1
        lines.append(f"FAIL  database {database}: {type(exc).__name__}")
    failed, line = secret_key_report()
    return [*lines, line], failures + failed


def secret_key_report() -> tuple[int, str]:
    """PIPELINE_SECRET_KEY: unset is news (enrichment runs; CRM sync and ERP export cannot
    read credentials), malformed a failure — said without showing a key."""
    from pipeline.credentials import CredentialCipher
    from pipeline.errors import SettingsError
    from pipeline.settings import get_settings

    if get_settings().pipeline_secret_key is None:
        return 0, (
            "--    PIPELINE_SECRET_KEY not set: CRM sync and ERP export cannot read "
            "credentials (give every worker the same key)"
        )
    try:
        CredentialCipher.from_settings()
    except SettingsError as exc:
        return 1, f"FAIL  {exc.message}"
    return 0, "ok    PIPELINE_SECRET_KEY (credentials can be read)"


def _reach(url: str) -> None:
    """Ping Redis; any other broker (amqp://) through kombu, as the workers reach it."""
    import redis
    from kombu import Connection

    if url.startswith(("redis://", "rediss://")):
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return
    with Connection(url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)


def live_workers(timeout: float = 1.0) -> list[str]:
    """Names of the Celery workers that answer a ping within `timeout` (none: [])."""
    from workers.app import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # the broker cannot be asked: no worker can be seen either
        return []
    return sorted(name for reply in replies for name in reply)
