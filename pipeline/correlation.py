"""The correlation id of the current request or task, kept in structlog's context.

Keeping it there (rather than in a second context variable) means every log line carries
it with no extra work, and whatever enqueues a task can read it to put it in the headers.
The task header is `x_correlation_id`: Celery's own `correlation_id` is the task id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

HEADER = "x_correlation_id"
LOG_KEY = "correlation_id"
# An id from outside goes into log lines, task headers and `runs.correlation_id` (64 chars).
_CARRIABLE = re.compile(r"[A-Za-z0-9._:@+=/-]{1,64}")


def current_correlation_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get(LOG_KEY)
    return str(value) if value else None


def ensure_correlation_id(value: str | None = None) -> str:
    """Bind `value` (or the current id, or a new one) and return it."""
    cid = value or current_correlation_id() or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(**{LOG_KEY: cid})
    return cid


def carriable(value: str | None) -> str | None:
    """`value` if it is fit to carry (1-64 letters, digits or `._:@+=/-`), else None — so a
    caller's odd header never lands in our logs or tables; a new id is made instead."""
    return value if value and _CARRIABLE.fullmatch(value) else None


@contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Bind `value` (or a new id) for one block — one web request — and put back whatever
    was bound before, so ids never leak from one request to the next."""
    cid = value or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(**{LOG_KEY: cid}):
        yield cid
