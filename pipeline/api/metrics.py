"""`GET /metrics`: Prometheus exposition of this host's worker processes and breaker state.

Admin only: breaker state is labelled by tenant, which one tenant must not read of
another. (Prometheus sends the key with `http_headers` in its scrape config; the workers'
own metrics port, `WORKER_METRICS_PORT`, is meant for a private network.)
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from pipeline.api.auth import AdminCaller
from pipeline.api.responses import keyed
from pipeline.metrics.exposition import render

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **keyed(403),
    },
)
def metrics(_: AdminCaller) -> Response:
    """Metrics in Prometheus text format (see README, Metrics)."""
    body, content_type = render()
    return Response(content=body, media_type=content_type)
