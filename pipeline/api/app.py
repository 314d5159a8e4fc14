"""The application factory: routers, middleware and error handlers put together once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from pipeline.api import breakers, dead_letters, health, metrics, runs
from pipeline.api.bodies import register_schemas
from pipeline.api.correlation import CorrelationIdMiddleware
from pipeline.api.errors import install_error_handlers
from pipeline.api.limits import BodyLimitMiddleware
from pipeline.health import DependencyHealth
from pipeline.settings import get_settings

ROUTERS = (runs.router, dead_letters.router, breakers.router, health.router, metrics.router)

DESCRIPTION = """
Enqueue enrichment, CRM sync and export runs; read runs and their items' degradation
reasons; replay what died from the dead-letter store; watch and force the per-tenant circuit
breakers; check dependencies; scrape metrics.

Every request but `GET /health` needs an API key in the `X-API-Key` header
(`pipeline apikeys create`). A tenant key sees and acts on its own tenant only — another
tenant's ids answer 404, as if they did not exist; an admin key sees all.
Every error, whatever its status, has one body: `error`, `status_code`, `message`,
`details`, `error_code`, `correlation_id`, `timestamp`; `details.errors` names each field
that was wrong (`field`, `message`, `type`), and no message repeats a value sent. A body
is at most `API_MAX_BODY_BYTES` (413) and must arrive within `API_BODY_TIMEOUT_S` (408).
Send `X-Correlation-ID` to follow a request into the tasks it
starts (their log lines carry it); without one, one is made. Either way it comes back in the
response's `X-Correlation-ID` header.
"""


class PipelineAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with the schemas of bodies routes parse themselves."""
        return register_schemas(super().openapi())


def create_app(*, health_checks: DependencyHealth | None = None) -> FastAPI:
    """A new API application, with the body limits of the current settings.
    `health_checks` lets a caller (a test) give the dependency checks its own clock; by
    default they run on the monotonic clock."""
    checks = health_checks or DependencyHealth()
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        checks.close()

    app = PipelineAPI(
        title="resilient-pipeline",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,  # a 307 built from the client's Host header: a plain 404
    )
    app.state.health_checks = checks
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.api_max_body_bytes,
        timeout_s=settings.api_body_timeout_s,
    )
    app.add_middleware(CorrelationIdMiddleware)  # added last: the outermost
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
