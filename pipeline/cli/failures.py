"""The CLI's one error handler: every failure becomes one line on stderr that says what to
do, and an exit code — never a traceback.

    2  bad input: Click's usage errors, and the product's `PipelineError`s
    3  a dependency unavailable: the database (down, or not migrated), Redis, the broker,
       no worker, the simulator
    1  anything else unexpected (a bug: `PIPELINE_TRACEBACK=1` shows where)

Messages come from the errors themselves, which name fields rather than quote values.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

import click

from pipeline.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE
from pipeline.errors import DATABASE_ERRORS, DependencyUnavailableError, PipelineError

Failure = tuple[str, int]
# Click 8.2 raises this for a group run without a command (8.1 printed help and exited 0).
NO_ARGS_IS_HELP: type[click.UsageError] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ()
)


def run_guarded(command: Callable[[], int]) -> int:
    """`command()`'s exit code, or the code and one-line message of what it raised."""
    try:
        return command()
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except NO_ARGS_IS_HELP as exc:  # a group given no command: its help, as Click shows it
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "pipeline"
        print(f"pipeline: {exc.format_message()} (see `{where} --help`)", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        print(f"pipeline: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("pipeline: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message, code = describe(exc)
        print(f"pipeline: {message}", file=sys.stderr)
        if code == EXIT_FAILED and os.environ.get("PIPELINE_TRACEBACK"):
            traceback.print_exc()
        return code


def describe(exc: Exception) -> Failure:
    """What went wrong, and the exit code that says so."""
    import redis
    import sqlalchemy.exc

    if isinstance(exc, DependencyUnavailableError):
        return f"{exc.code}: {exc.message}", EXIT_UNAVAILABLE
    if isinstance(exc, PipelineError):
        return f"{exc.code}: {exc.message}", EXIT_USAGE
    if isinstance(exc, sqlalchemy.exc.DBAPIError):  # the database answered, or did not
        return database_failure(exc)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return (
            f"Redis is unreachable ({type(exc).__name__}): start it, or point REDIS_URL and "
            "BROKER_URL at it; `pipeline check` shows what is reached",
            EXIT_UNAVAILABLE,
        )
    return (
        f"unexpected {type(exc).__name__} (a bug; PIPELINE_TRACEBACK=1 shows where)",
        EXIT_FAILED,
    )


def database_failure(exc: Exception) -> Failure:
    """A database error: most often one not migrated (a missing table or column), else one
    that cannot be reached."""
    from pipeline.db.migrate import UPGRADE_HINT, pending_migrations
    from pipeline.settings import get_settings

    url = get_settings().database_url
    try:
        pending = pending_migrations(url)
    except Exception:  # cannot even read the version table: unreachable
        pending = []
    if pending:
        return (
            f"the database is not migrated ({len(pending)} migrations pending): {UPGRADE_HINT}",
            EXIT_UNAVAILABLE,
        )
    cause = getattr(exc, "orig", None) or exc
    if isinstance(exc, DATABASE_ERRORS):
        return (
            f"the database is unreachable ({type(cause).__name__}): start it, or point "
            "DATABASE_URL at it",
            EXIT_UNAVAILABLE,
        )
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DataError):
        return "a value given is out of what the database can store", EXIT_USAGE
    return (
        f"the database refused a query ({type(cause).__name__}); `pipeline check` tells "
        "whether it is reachable and migrated",
        EXIT_FAILED,
    )
