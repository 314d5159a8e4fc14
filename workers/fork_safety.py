"""Prefork children inherit the parent's pooled sockets; each child must open its own."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from pipeline.breakers import configure_breakers
from pipeline.db.engine import dispose_engines
from pipeline.resilience.guard import configure_guard
from pipeline.vendors.registry import forget_clients


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    dispose_engines()
    configure_breakers(None)
    configure_guard(None)
    forget_clients()
