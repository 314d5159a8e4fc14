"""The embedded mode: the whole product in one process, with nothing else installed.

Broker `memory://`, breaker state in memory (`REDIS_URL=memory://`), runs in a SQLite file,
and a Celery worker (thread pool) inside this process. For a newcomer's first look and for
the demo — not for production: one process means no shared breaker state across machines,
and the memory broker loses its queue when the process ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.settings import Settings, get_settings

EMBEDDED_ENV = {
    "BROKER_URL": "memory://",
    "RESULT_BACKEND": "cache+memory://",
    "REDIS_URL": "memory://",
}


def services_configured() -> bool:
    """True when the environment names a real broker and database (use them, not memory)."""
    return bool(os.environ.get("BROKER_URL")) and bool(os.environ.get("DATABASE_URL"))


def use_embedded(database: Path) -> Settings:
    """Point this process's settings at the in-process broker, memory state and SQLite."""
    os.environ.update({**EMBEDDED_ENV, "DATABASE_URL": f"sqlite:///{database}"})
    return reload_settings()


def reload_settings() -> Settings:
    """Forget every object built from the old settings, in this process."""
    from pipeline.breakers import configure_breakers
    from pipeline.resilience.guard import configure_guard
    from pipeline.vendors.registry import forget_clients
    from workers.app import app, celery_config

    get_settings.cache_clear()
    settings = get_settings()
    configure_breakers(None)
    configure_guard(None)
    forget_clients()
    app.conf.update(celery_config(settings))
    return settings


def start_worker(concurrency: int = 4) -> Callable[[], None]:
    """A Celery worker with a thread pool, running in a thread of this process.

    Returns a function that stops it.
    """
    from celery.worker import WorkController

    from workers.app import QUEUES, app

    worker = WorkController(
        app=app,
        hostname="embedded@localhost",
        pool_cls="threads",
        concurrency=concurrency,
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        queues=list(QUEUES),
    )
    thread = threading.Thread(target=worker.start, name="embedded-worker", daemon=True)
    thread.start()

    def stop() -> None:
        worker.stop(in_sighandler=False)
        thread.join(timeout=10)

    return stop
