"""Each attempt at a run item, and its last error code, recorded on the item.

Tasks take part when called with an `item_id` keyword (each attempt is counted as it
starts) or with a step context carrying `item_id` as first argument (enrichment steps: only
retries are recorded, so the healthy path costs no extra write; the item's `attempts` is then
the most any of its steps needed). Bookkeeping is best effort — a database hiccup here must
not fail the work — and idempotent: attempt numbers come from Celery's retry count, so a
redelivered message does not count one attempt twice.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.signals import task_failure, task_prerun, task_retry

from pipeline import runs
from pipeline.errors import error_code
from workers.resilient_task import FREE_RETRY_ERRORS, spent_retries

log = structlog.get_logger(__name__)


def _item_id(args: Any, kwargs: dict[str, Any] | None) -> int | None:
    value = (kwargs or {}).get("item_id")
    if value is None and args and isinstance(args[0], dict):
        value = args[0].get("item_id")
    return int(value) if value is not None else None


def _code(error: Any) -> str:
    return error_code(error) if isinstance(error, BaseException) else str(error)


@task_prerun.connect
def _attempt(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if task is not None and (kwargs or {}).get("item_id") is not None:
        item_id = int(kwargs["item_id"])  # type: ignore[index]
        _safely(runs.record_attempt, item_id, spent_retries(task.request) + 1)


@task_retry.connect
def _retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    item_id = _item_id(getattr(request, "args", None), getattr(request, "kwargs", None))
    if item_id is None:
        return
    error = getattr(reason, "exc", reason)  # `reason` is Celery's Retry, wrapping the error
    if not isinstance(error, FREE_RETRY_ERRORS):  # an outage or a pause is not an attempt
        _safely(runs.record_attempt, item_id, spent_retries(request) + 2)
    _safely(runs.record_item_error, item_id, _code(error))


@task_failure.connect
def _failed(exception: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    item_id = _item_id(args, kwargs)
    if item_id is not None:
        _safely(runs.record_item_error, item_id, _code(exception))


def _safely(record: Any, *args: Any) -> None:
    try:
        record(*args)
    except Exception as exc:
        log.warning("run_item.not_recorded", record=record.__name__, error=type(exc).__name__)
