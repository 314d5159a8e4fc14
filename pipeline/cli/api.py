"""`pipeline api [--host H] [--port P]`: the web API under uvicorn, with our JSON logs."""

from __future__ import annotations

import click

from pipeline.cli.common import EXIT_OK, PORT, example


@click.command(epilog=example("pipeline api", "pipeline api --host 0.0.0.0 --port 8080"))
@click.option("--host", metavar="ADDRESS", help="Address to listen on (default: API_HOST).")
@click.option("--port", type=PORT, help="Port (default: API_PORT).")
def api(host: str | None, port: int | None) -> int:
    """Serve the web API (OpenAPI docs at /docs) until interrupted."""
    from pipeline.api.server import serve
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    serve(host=host or settings.api_host, port=port or settings.api_port)
    return EXIT_OK
