"""`pipeline flower`: Celery's Flower against our app, behind basic auth from settings.

Flower is run as it is (`celery -A workers.app flower`, in this process); this command only
refuses to start it open to anyone, and hands it the credentials through its own
`FLOWER_BASIC_AUTH` environment variable rather than the command line, where `ps` and
shell history would show the password.

Flower sees tasks through the events workers send: `worker_send_task_events` (what `-E`
sets) and `task_send_sent_event` are on in `workers.app`, so any worker started from it
reports its tasks without extra flags.
"""

from __future__ import annotations

import os

import click

from pipeline.cli.common import PORT, example
from pipeline.errors import SettingsError


def basic_auth() -> str:
    """`user:password` from settings; `SettingsError` (exit code 2) without a password."""
    from pipeline.settings import get_settings

    settings = get_settings()
    if settings.flower_password is None or not settings.flower_password.get_secret_value():
        raise SettingsError(
            "FLOWER_PASSWORD is not set: Flower shows every task and can revoke them, so it "
            "does not start without a password (FLOWER_USER defaults to admin)"
        )
    return f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"


@click.command(
    short_help="Run Flower (task monitor) behind basic auth.",
    epilog=example(
        "FLOWER_PASSWORD=... pipeline flower",
        "FLOWER_PASSWORD=... pipeline flower --port 5555 --address 0.0.0.0",
    ),
)
@click.option("--port", type=PORT, help="Port (default: FLOWER_PORT, 5555).")
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: all interfaces).",
)
def flower(port: int | None, address: str) -> int:
    """Run Flower (worker and task monitor) behind basic auth: FLOWER_USER and
    FLOWER_PASSWORD (without a password it does not start)."""
    from pipeline.flower_auth import require_auth_everywhere
    from pipeline.settings import get_settings

    os.environ["FLOWER_BASIC_AUTH"] = basic_auth()
    require_auth_everywhere()  # every path, /metrics and /healthcheck too
    port = port or get_settings().flower_port
    from workers.app import app

    # Flower picks its client for queue lengths by the scheme of Celery's broker URL, which
    # the worker's transport (`workers.broker_transport`, a `module:Class` path) would hide;
    # Flower consumes events only, never tasks, so kombu's own transport serves it.
    app.conf.broker_transport = None
    return int(app.start(["flower", f"--port={port}", f"--address={address}"]) or 0)
