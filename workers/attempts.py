"""Each attempt at a run item, and its last error code, recorded on the item.

Only tasks called with an `item_id` keyword take part. Bookkeeping is best effort — a
database hiccup here must not fail the work — and idempotent: the attempt number comes from
Celery's retry count, so a redelivered message does not count one attempt twice.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.signals import task_failure, task_prerun, task_retry

from pipeline import runs

log = structlog.get_logger(__name__)


def _item_id(kwargs: dict[str, Any] | None) -> int | None:
    value = (kwargs or {}).get("item_id")
    return int(value) if value is not None else None


@task_prerun.connect
def _attempt(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    item_id = _item_id(kwargs)
    if item_id is not None and task is not None:
        _safely(runs.record_attempt, item_id, task.request.retries + 1)


@task_retry.connect
def _retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    item_id = _item_id(getattr(request, "kwargs", None))
    error = getattr(reason, "exc", reason)  # `reason` is Celery's Retry, wrapping the error
    if item_id is not None:
        _safely(runs.record_item_error, item_id, getattr(error, "code", type(error).__name__))


@task_failure.connect
def _failed(exception: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    item_id = _item_id(kwargs)
    if item_id is not None:
        code = getattr(exception, "code", type(exception).__name__)
        _safely(runs.record_item_error, item_id, code)


def _safely(record: Any, *args: Any) -> None:
    try:
        record(*args)
    except Exception as exc:
        log.warning("run_item.not_recorded", record=record.__name__, error=type(exc).__name__)
