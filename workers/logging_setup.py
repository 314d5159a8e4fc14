"""Celery must not configure logging itself: our JSON setup replaces it in every process.

And Celery must not log task return values: an enrichment step returns its whole context
(contacts, emails), a sync step may return what it wrote — data that does not belong in
logs, and costly to format on every task. Success lines keep name, id and runtime.
"""

from __future__ import annotations

from typing import Any

import celery.app.trace
from celery.signals import setup_logging

from pipeline.logs import configure_logging
from pipeline.settings import get_settings

celery.app.trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


@setup_logging.connect
def _configure(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
