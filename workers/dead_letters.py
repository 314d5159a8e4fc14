"""Every way a task can die ends in the dead-letter store (`pipeline.dead_letters`), once.

- **`task_failure`** (Celery 5.7 sends it for all of these): an error that is not
  retryable, a retryable one that outlasted the policy (`RETRIES_EXHAUSTED`), the hard
  time limit (sent from the worker's main process after it killed the child), and a
  raised `Reject(requeue=False)`.
- **A worker lost with its task** (the child killed: OOM, segfault, SIGKILL) is
  re-queued by `reject_on_worker_lost` — and a message that kills every worker that takes
  it would loop forever. `workers.deliveries` counts deliveries of each attempt and dead-
  letters it past `TASK_MAX_DELIVERIES` (see `ResilientTask.__call__`).
- **A message no task can run** (not an envelope, undecodable, refused content type, no
  or an unknown task name) never reaches a task: the worker's consumer
  (`workers.consumer.DeadLetterConsumer`, set as `worker_consumer`) records it, then
  settles it as Celery does, so it lands here once instead of vanishing.

Recording never raises into Celery: if the database is down the entry is spooled in Redis
(`pipeline.dead_letters.record`), and if that fails too it is logged.
"""

from __future__ import annotations

from typing import Any

import structlog
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery.exceptions import Reject
from celery.signals import task_failure

from pipeline import dead_letters
from pipeline.correlation import HEADER
from pipeline.errors import PipelineError, error_code
from workers.resilient_task import is_broker_outage, spent_retries

log = structlog.get_logger(__name__)


def path_of(exception: BaseException) -> str:
    if isinstance(exception, TimeLimitExceeded | SoftTimeLimitExceeded):
        return "time_limit"
    if isinstance(exception, Reject):
        return "rejected"
    if isinstance(exception, WorkerLostError):
        return "worker_lost"
    return "failure"


def code_of(exception: BaseException) -> str:
    if isinstance(exception, PipelineError):
        return exception.code
    if isinstance(exception, TimeLimitExceeded | SoftTimeLimitExceeded):
        return "TIME_LIMIT"
    if isinstance(exception, Reject):
        inner = exception.reason
        return code_of(inner) if isinstance(inner, BaseException) else "REJECTED"
    return error_code(exception)


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
    if is_broker_outage(exception):  # the work is fine and still open: the reconciler has it
        log.warning("dead_letter.skipped", task_id=task_id, why="broker unreachable")
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
            attempts=spent_retries(request) + 1 if request is not None else 1,
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
