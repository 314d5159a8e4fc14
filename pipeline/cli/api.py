"""`pipeline api [--host H] [--port P]`: the web API under uvicorn, with our JSON logs."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import EXIT_OK


def port_number(value: str) -> int:
    """argparse type: a TCP port, with a message that says so."""
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value!r}")
    return int(value)


def register(sub: Any) -> None:
    cmd = sub.add_parser("api", help="serve the web API (docs at /docs)")
    cmd.add_argument("--host", help="address to listen on (default: API_HOST)")
    cmd.add_argument("--port", type=port_number, help="port (default: API_PORT)")
    cmd.set_defaults(run=api_command)


def api_command(args: argparse.Namespace) -> int:
    from pipeline.api.server import serve
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    serve(host=args.host or settings.api_host, port=args.port or settings.api_port)
    return EXIT_OK
