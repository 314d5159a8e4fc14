"""What a scrape shows: this host's worker processes' metrics plus breaker state from Redis.

    from pipeline.metrics.exposition import render
    body, content_type = render()          # e.g. behind the web app's GET /metrics

With `PROMETHEUS_MULTIPROC_DIR` set (a prefork worker must have it), every process writes
its metrics to its own files there and prometheus-client's `MultiProcessCollector` adds them
up per scrape — so any process on the host given the same directory (the worker's main
process, the web app) shows the pool's counts. Without it, this process's own registry is
shown (the embedded mode, a solo worker). Breaker state comes from Redis either way.
"""

from __future__ import annotations

import os
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)

from pipeline.metrics.breaker_state import BreakerStateCollector
from pipeline.settings import Settings, get_settings


def scrape_registry(settings: Settings | None = None) -> CollectorRegistry:
    """A registry whose every collect reads the current figures (files, Redis)."""
    settings = settings or get_settings()
    registry = CollectorRegistry()
    if settings.prometheus_multiproc_dir:
        # Not the default registry as well: it holds the same metrics, shown twice.
        os.makedirs(settings.prometheus_multiproc_dir, exist_ok=True)
        multiprocess.MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)
    else:
        registry.register(REGISTRY)
    if not settings.embedded:
        from pipeline.redis_client import redis_for

        client = redis_for(settings.redis_url)
        registry.register(BreakerStateCollector(client, settings.redis_key_prefix))
    return registry


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of this host's metrics, and its content type."""
    return generate_latest(scrape_registry()), CONTENT_TYPE_LATEST


def serve(port: int, address: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """Serve `GET /metrics` from a daemon thread of this process (prometheus-client's own
    server); `server.shutdown()` stops it."""
    return start_http_server(port, addr=address, registry=scrape_registry())
