"""A correlation id travels in every task's headers and is bound into every log line.

Publishing a task copies the current id (from the request or parent task) into the
message headers, or makes one; a worker binds it — with tenant, run and task id — before
the task runs, and clears it after, so ids never leak between tasks of one process.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery.signals import before_task_publish, task_postrun, task_prerun

from pipeline.correlation import HEADER, current_correlation_id, ensure_correlation_id

CONTEXT_KWARGS = ("tenant_id", "run_id", "item_id")


@before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and not headers.get(HEADER):
        headers[HEADER] = current_correlation_id() or uuid.uuid4().hex


@task_prerun.connect
def _bind(
    task_id: str = "", task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any
) -> None:
    structlog.contextvars.clear_contextvars()
    request = task.request if task is not None else None
    cid = getattr(request, HEADER, None) or (getattr(request, "headers", None) or {}).get(HEADER)
    ensure_correlation_id(str(cid)[:64] if cid else None)
    context = {k: v for k, v in (kwargs or {}).items() if k in CONTEXT_KWARGS}
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=getattr(task, "name", ""), **context
    )


@task_postrun.connect
def _unbind(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
