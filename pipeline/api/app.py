"""The application factory: routers, middleware and error handlers put together once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pipeline.api import breakers, dead_letters, health, metrics, runs
from pipeline.api.correlation import CorrelationIdMiddleware
from pipeline.api.errors import install_error_handlers
from pipeline.health import DependencyHealth

ROUTERS = (runs.router, dead_letters.router, breakers.router, health.router, metrics.router)

DESCRIPTION = """
Enqueue enrichment, CRM sync and export runs; read runs and their items' degradation
reasons; replay what died from the dead-letter store; watch and force the per-tenant circuit
breakers; check dependencies; scrape metrics.

Every request but `GET /health` needs an API key in the `X-API-Key` header
(`pipeline apikeys create`). A tenant key sees and acts on its own tenant only — another
tenant's ids answer 404, as if they did not exist; an admin key sees all.
Every error has one body: `error`, `status_code`, `message`, `details`, `error_code`,
`correlation_id`, `timestamp`. Send `X-Correlation-ID` to follow a request into the tasks it
starts (their log lines carry it); without one, one is made. Either way it comes back in the
response's `X-Correlation-ID` header.
"""


def create_app(*, health_checks: DependencyHealth | None = None) -> FastAPI:
    """A new API application. `health_checks` lets a caller (a test) give the dependency
    checks its own clock; by default they run on the monotonic clock."""
    checks = health_checks or DependencyHealth()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        checks.close()

    app = FastAPI(
        title="resilient-pipeline",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.health_checks = checks
    app.add_middleware(CorrelationIdMiddleware)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
