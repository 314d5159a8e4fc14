"""Every way a task can die ends in the dead-letter store (`pipeline.dead_letters`), once.

- **`task_failure`** (Celery 5.7 sends it for all of these): an error that is not
  retryable, a retryable one that outlasted the policy (`RETRIES_EXHAUSTED`), the hard
  time limit (sent from the worker's main process after it killed the child), and a
  raised `Reject(requeue=False)`.
- **A worker lost with its task** (the child killed: OOM, segfault, SIGKILL) is
  re-queued by `reject_on_worker_lost` — and a message that kills every worker that takes
  it would loop forever. `workers.deliveries` counts deliveries of each attempt and dead-
  letters it past `TASK_MAX_DELIVERIES` (see `ResilientTask.__call__`).
- **A message that cannot be decoded** or names no task we know never reaches a task:
  the worker's consumer (`DeadLetterConsumer`, set as `worker_consumer`) records it, then
  acknowledges it as Celery does, so it lands here once instead of vanishing.

Recording never raises into Celery: if the database is down the failure is logged.
"""

from __future__ import annotations

from typing import Any

import structlog
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery.exceptions import Reject
from celery.signals import task_failure, task_unknown
from celery.worker.consumer import Consumer

from pipeline import dead_letters
from pipeline.correlation import HEADER

log = structlog.get_logger(__name__)
MAX_BODY = 2000


def path_of(exception: BaseException) -> str:
    if isinstance(exception, TimeLimitExceeded | SoftTimeLimitExceeded):
        return "time_limit"
    if isinstance(exception, Reject):
        return "rejected"
    if isinstance(exception, WorkerLostError):
        return "worker_lost"
    return "failure"


def code_of(exception: BaseException) -> str:
    code = getattr(exception, "code", None)
    if isinstance(code, str) and code:
        return code
    if isinstance(exception, TimeLimitExceeded | SoftTimeLimitExceeded):
        return "TIME_LIMIT"
    if isinstance(exception, Reject):
        inner = exception.reason
        return code_of(inner) if isinstance(inner, BaseException) else "REJECTED"
    return type(exception).__name__


def message_of(exception: BaseException) -> str:
    """Our errors' messages are written to be shown; anything else shows its type and text
    (database errors hide their parameters: `hide_parameters`)."""
    text = getattr(exception, "message", None) or str(exception)
    return f"{type(exception).__name__}: {text}"


@task_failure.connect
def _dead_letter(
    sender: Any = None,
    task_id: str = "",
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    if exception is None:
        return
    request = getattr(sender, "request", None)
    if getattr(request, "id", None) != task_id:
        request = None  # reported from the main process without the task's context
    chain = getattr(request, "chain", None)
    headers = getattr(request, "headers", None) or {}
    try:
        dead_letters.record(
            task_id=task_id,
            task_name=getattr(sender, "name", "unknown"),
            args=list(args or []),
            kwargs=dict(kwargs or {}),
            path=path_of(exception),
            error_code=code_of(exception),
            message=message_of(exception),
            traceback=str(getattr(einfo, "traceback", "") or ""),
            attempts=int(getattr(request, "retries", 0) or 0) + 1,
            correlation_id=getattr(request, HEADER, None) or headers.get(HEADER),
            options=_context_options(request, chain),
        )
    except Exception as error:
        log.error("dead_letter.not_recorded", task_id=task_id, error=type(error).__name__)


def _context_options(request: Any, chain: Any) -> dict[str, Any] | None:
    """What a replay needs of the message: the rest of its chain — and whether the report
    came with the task's context at all (without it, "no chain" proves nothing)."""
    if request is None:
        return None
    return {"context": True, **({"chain": chain} if chain else {})}


@task_unknown.connect
def _unknown_task(
    message: Any = None, exc: Any = None, name: str = "", id: str = "", **_: Any
) -> None:
    _record_message(
        message,
        task_id=id,
        task_name=name or "unknown",
        path="unknown_task",
        code="UNKNOWN_TASK",
        why=f"no task named {name!r} is registered",
    )


class DeadLetterConsumer(Consumer):
    """Celery's consumer, keeping undecodable messages instead of dropping them."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None) or {}
        _record_message(
            message,
            task_id=str(headers.get("id") or ""),
            task_name=str(headers.get("task") or "undecodable"),
            path="undecodable",
            code="UNDECODABLE",
            why=f"{type(exc).__name__} decoding a {message.content_type!r} message",
        )
        super().on_decode_error(message, exc)


def _record_message(
    message: Any, *, task_id: str, task_name: str, path: str, code: str, why: str
) -> None:
    body = getattr(message, "body", b"")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_tag", None)
    try:
        dead_letters.record(
            task_id=task_id or f"message:{delivery or id(message)}",
            task_name=task_name,
            args=[],
            kwargs={},
            path=path,
            error_code=code,
            message=why,
            correlation_id=headers.get(HEADER),
            options={"body": str(body)[:MAX_BODY], "content_type": message.content_type},
        )
    except Exception as error:
        log.error("dead_letter.not_recorded", path=path, error=type(error).__name__)
