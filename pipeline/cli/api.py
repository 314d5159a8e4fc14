"""`pipeline api [--host H] [--port P]`: the web API under uvicorn, with our JSON logs."""

from __future__ import annotations

import socket

import click

from pipeline.cli.common import EXIT_OK, PORT, example
from pipeline.errors import DependencyUnavailableError


@click.command(epilog=example("pipeline api", "pipeline api --host 0.0.0.0 --port 8080"))
@click.option("--host", metavar="ADDRESS", help="Address to listen on (default: API_HOST).")
@click.option("--port", type=PORT, help="Port (default: API_PORT).")
def api(host: str | None, port: int | None) -> int:
    """Serve the web API (OpenAPI docs at /docs) until interrupted."""
    from pipeline.api.server import serve
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings

    settings = get_settings()
    host, port = host or settings.api_host, port or settings.api_port
    ensure_bindable(host, port)  # else uvicorn says so in log lines, then exits
    configure_logging(settings.log_level, json=settings.log_json)
    serve(host=host, port=port)
    return EXIT_OK


def ensure_bindable(host: str, port: int) -> None:
    """Fail in one line, before start-up, if `host:port` cannot be listened on (taken, or
    an address this machine does not have)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DependencyUnavailableError(
            f"cannot listen on port {port} ({reason}): stop what holds it, or pass another "
            "--port (or --host)"
        ) from None
