"""`pipeline api` with one route more, `GET /fault`, that fails as a bug would: for tests of
what the server does after an unexpected error (the answer, the log, the connection).

    python -m tests.support.api_with_a_fault PORT
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from pipeline.api import create_app


def app_with_a_fault() -> FastAPI:
    app = create_app()

    @app.get("/fault", include_in_schema=False)
    def fault() -> None:
        raise RuntimeError("a bug")

    return app


if __name__ == "__main__":
    from pipeline.api.server import serve
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    serve("127.0.0.1", int(sys.argv[1]), app_with_a_fault())
