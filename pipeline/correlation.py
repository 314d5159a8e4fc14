"""The correlation id of the current request or task, kept in structlog's context.

Keeping it there (rather than in a second context variable) means every log line carries
it with no extra work, and whatever enqueues a task can read it to put it in the headers.
The task header is `x_correlation_id`: Celery's own `correlation_id` is the task id.
"""

from __future__ import annotations

import uuid

import structlog

HEADER = "x_correlation_id"
LOG_KEY = "correlation_id"


def current_correlation_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get(LOG_KEY)
    return str(value) if value else None


def ensure_correlation_id(value: str | None = None) -> str:
    """Bind `value` (or the current id, or a new one) and return it."""
    cid = value or current_correlation_id() or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(**{LOG_KEY: cid})
    return cid
