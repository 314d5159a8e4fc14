"""`/health`: liveness for load balancers, and the state of every dependency for operators.

`GET /health` needs no key and touches nothing: it says the process answers.
`GET /health/dependencies` (admin key) answers from `pipeline.health.DependencyHealth`,
cached for `HEALTH_CACHE_S` so it can be polled; it is 200 whatever it finds — the booleans
say what is down, `details` says why.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from pipeline.api.auth import AdminCaller
from pipeline.api.responses import answers, keyed

router = APIRouter(prefix="/health", tags=["health"])


class Liveness(BaseModel):
    status: str = "ok"


class DependencyReport(BaseModel):
    redis: bool
    postgres: bool
    broker: bool
    workers: bool
    vendors: dict[str, bool | None]
    details: dict[str, Any]


@router.get("", response_model=Liveness, responses=answers())
async def liveness() -> Liveness:
    return Liveness()


@router.get(
    "/dependencies",
    response_model=DependencyReport,
    responses=keyed(403),
)
def dependencies(request: Request, _: AdminCaller) -> dict[str, Any]:
    """Redis, Postgres, the broker, live workers (answered a ping within
    `HEALTH_WORKER_SEEN_S`), and each vendor's health from its breakers (null: unknown,
    breaker state unreadable)."""
    report: dict[str, Any] = request.app.state.health_checks.report()
    return report
