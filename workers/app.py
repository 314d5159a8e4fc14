"""The Celery application: `celery -A workers.app worker`.

Queues: `critical` (CRM sync), `default` (enrichment), `export` (ERP export). Tasks are acked
late and re-queued if their worker dies, one message is prefetched at a time, and the
broker's visibility timeout is checked (by settings) to outlast the longest retry countdown:
an ETA message held past it would be redelivered and run twice.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from celery import Celery
from kombu import Exchange, Queue

from pipeline.errors import SettingsError
from pipeline.settings import Settings, get_settings

QUEUES = ("critical", "default", "export")
ROUTES = {
    "tasks.crm_sync.*": {"queue": "critical"},
    "tasks.enrichment.*": {"queue": "default"},
    "tasks.export.*": {"queue": "export"},
    "tasks.maintenance.*": {"queue": "critical"},
}
# Job modules the worker imports; each is added when its job is built.
TASK_MODULES: tuple[str, ...] = (
    "tasks.crm_sync",
    "tasks.enrichment",
    "tasks.export",
    "tasks.maintenance",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    if settings.broker_url.startswith("memory://"):
        transport["polling_interval"] = 0.01  # in-process queues: poll often, it is cheap
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport, reading every envelope safely: bytes that are no message
        # reach the consumer (and the dead letters) instead of stopping the worker.
        "broker_transport": (
            "workers.broker_transport:Transport"
            if settings.broker_url.startswith("redis://")
            else None
        ),
        "result_backend": settings.result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_default_queue": "default",
        "task_default_exchange": "default",
        "task_default_routing_key": "default",
        "task_routes": ROUTES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(1, settings.task_time_limit_s - 10),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        # Results' reprs go to logs and task events (Flower): keep them short.
        "resultrepr_maxsize": 256,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "imports": TASK_MODULES,
        # Keeps every message no task can run in the dead-letter store instead of dropping it.
        "worker_consumer": "workers.consumer:DeadLetterConsumer",
        # `celery -A workers.app beat`: the periodic housekeeping (tasks.maintenance).
        "beat_schedule": {
            "reconcile": {
                "task": "tasks.maintenance.reconcile",
                "schedule": settings.reconcile_interval_s,
                # a pass not started within an interval is overtaken by the next one
                "options": {"expires": settings.reconcile_interval_s},
            },
        },
    }


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery("pipeline")
    app.config_from_object(celery_config(settings or get_settings()))
    return app


def _loaded_by_celery_command_line() -> bool:
    """Is Celery's own command line (`celery -A workers.app worker|beat|flower`) importing
    us? It turns any exception raised while loading `-A` into a traceback."""
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    callback = context.find_root().command.callback
    return getattr(callback, "__module__", None) == "celery.bin.celery"


try:
    app = create_app()
except SettingsError as exc:
    # Importing raises the product's SettingsError (naming the variable), which the
    # `pipeline` command line and any other caller handle. Only when Celery's command line
    # is starting a worker, beat or Flower from us does a bad environment end the command:
    # one line and exit 2 instead of Celery's traceback.
    if _loaded_by_celery_command_line():
        print(f"pipeline worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise
# The product's one app, also for threads that never had it set as current (an in-process
# worker's pool threads): otherwise a chain's next step is sent through Celery's default
# app, to its default broker.
app.set_default()

import workers.signals  # noqa: E402,F401  (hooks logging, correlation ids, fork safety)
