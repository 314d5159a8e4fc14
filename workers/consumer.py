"""The worker's consumer: a message no task can run is dead-lettered once, and the worker
goes on with the next.

Celery's consumer has a hook for each kind of message it cannot run; each logs the message
and drops it (acknowledged or rejected). Here each hook first records the message in the
dead-letter store through one function (`record_message`) — its raw bytes (base64, the
first `RAW_CAP`), a text preview, content type and queue — then lets Celery settle it as
before. Messages the broker transport could not even read as envelopes
(`workers.broker_transport`) arrive marked, carrying their bytes, and are recorded the same
way. Anything else a message makes the handler raise (a header of the wrong type, say) is
caught around Celery's handler, recorded as `unprocessable` and rejected; broker connection
errors pass through, for Celery to reconnect.

Paths (and codes) in the dead letters:

- `not_an_envelope` (`NOT_JSON` / `NOT_AN_ENVELOPE`): bytes that are not JSON / JSON that
  is not a kombu envelope (properties, delivery info or headers missing or garbled);
- `undecodable` (`UNDECODABLE`): the body does not decode (bad base64 or compression,
  invalid UTF-8, bad JSON);
- `refused_content` (`CONTENT_REFUSED`): a content type outside `accept_content` (pickle);
- `no_task_name` (`NO_TASK_NAME`): no `task` header (headers empty or missing), and the
  body is no protocol-1 task either;
- `unknown_task` (`UNKNOWN_TASK`): a task this worker does not have;
- `invalid_task` (`INVALID_TASK`): Celery's `InvalidTaskError` (a body without arguments);
- `unprocessable` (the error's type): anything else Celery's handler raised for it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from celery.utils.log import get_logger
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed
from vine import promise

from pipeline import dead_letters
from pipeline.correlation import HEADER
from workers.broker_transport import RAW_CAP, RAW_SIZE_HEADER, UNREADABLE_HEADER

log = structlog.get_logger(__name__)
celery_log = get_logger(__name__)  # what Celery's own ack and reject helpers log to
PREVIEW = 2000
_RECORDED = "_pipeline_dead_lettered"


@dataclass(frozen=True)
class Verdict:
    """Why no task can run a message: where it is filed in the dead letters, and how."""

    path: str
    code: str
    why: str


def unreadable_verdict(message: Any) -> Verdict | None:
    """The verdict on a message the transport could not read as an envelope; None for
    any other message."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    reason = headers.get(UNREADABLE_HEADER)
    if not isinstance(reason, str):
        return None
    if reason == "UNDECODABLE_BODY":
        return Verdict("undecodable", "UNDECODABLE", "its envelope's body does not decode")
    what = "bytes that are not JSON" if reason == "NOT_JSON" else "JSON that is not an envelope"
    return Verdict("not_an_envelope", reason, f"{what}: not a message any task can run")


def decode_verdict(message: Any, exc: BaseException) -> Verdict:
    if isinstance(exc, ContentDisallowed):
        return Verdict("refused_content", "CONTENT_REFUSED", str(exc)[:500])
    kind = f"{message.content_type!r} message"
    return Verdict("undecodable", "UNDECODABLE", f"{type(exc).__name__} decoding a {kind}: {exc}")


class DeadLetterConsumer(Consumer):
    """Celery's consumer, keeping every message no task can run instead of dropping it."""

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        handle = super().create_task_handler(promise)
        # kombu's Redis transport counts KeyError as a connection error (a stale poller fd);
        # raised by a message's handling it is the message's fault, and passing it on would
        # reconnect, restore the message and meet it again, forever.
        broker_errors = tuple(
            error
            for error in (*self.connection_errors, *self.channel_errors)
            if error is not KeyError
        )

        def on_task_received(message: Any) -> Any:
            verdict = unreadable_verdict(message)
            if verdict is not None:
                record_message(message, verdict)
                message.ack_log_error(celery_log, self.connection_errors)
                return None
            try:
                return handle(message)
            except broker_errors:
                raise
            except Exception as exc:
                name = type(exc).__name__
                if not getattr(message, _RECORDED, False):
                    why = f"{name} handling the message: {exc}"[:500]
                    record_message(message, Verdict("unprocessable", name, why))
                if not message.acknowledged:
                    message.reject_log_error(celery_log, self.connection_errors)
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        record_message(message, decode_verdict(message, exc))
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        why = "it names no task: no `task` header, and its body is no protocol-1 task"
        record_message(message, Verdict("no_task_name", "NO_TASK_NAME", why))
        super().on_unknown_message(body, message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            verdict = decode_verdict(message, exc)
        else:
            verdict = Verdict("invalid_task", "INVALID_TASK", str(exc)[:500])
        record_message(message, verdict)
        super().on_invalid_task(body, message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        name = headers.get("task", body.get("task") if isinstance(body, dict) else None)
        why = f"no task named {name!r} is registered"[:500]
        record_message(message, Verdict("unknown_task", "UNKNOWN_TASK", why))
        super().on_unknown_task(body, message, exc)


def record_message(message: Any, verdict: Verdict) -> None:
    """Keep `message` in the dead-letter store as `verdict` says (never raises: a message
    that cannot be recorded is logged, and the consumer goes on)."""
    setattr(message, _RECORDED, True)
    raw = _raw_bytes(message.body)
    headers = message.headers if isinstance(message.headers, dict) else {}
    unreadable = UNREADABLE_HEADER in headers
    size = headers.get(RAW_SIZE_HEADER) if unreadable else len(raw)
    delivery_info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    try:
        dead_letters.record(
            task_id=_message_id(message),
            task_name=_header(message, "task") or verdict.path,
            args=[],
            kwargs={},
            path=verdict.path,
            error_code=verdict.code,
            message=verdict.why,
            correlation_id=_header(message, HEADER),
            options={
                "body": raw[: PREVIEW * 4].decode("utf-8", "replace")[:PREVIEW],
                "raw": base64.b64encode(raw[:RAW_CAP]).decode("ascii"),
                "raw_bytes": size if isinstance(size, int) else len(raw),
                "content_type": None if unreadable else message.content_type,
                "content_encoding": None if unreadable else message.content_encoding,
                "queue": delivery_info.get("routing_key"),
            },
        )
    except Exception as error:
        log.error("dead_letter.not_recorded", path=verdict.path, error=type(error).__name__)


def _raw_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, memoryview | bytearray):
        return bytes(body)
    return b"" if body is None else str(body).encode("utf-8", "replace")


def _header(message: Any, name: str) -> str | None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    value = headers.get(name)
    return value if isinstance(value, str) and value else None


def _message_id(message: Any) -> str:
    """The task id it carries; else its Redis delivery tag (a uuid that stays with the
    message when it is restored); else a new id (AMQP delivery tags count per channel)."""
    task_id = _header(message, "id")
    if task_id:
        return task_id
    tag = message.delivery_tag
    return f"message:{tag}" if isinstance(tag, str) and tag else f"message:{uuid.uuid4().hex}"
