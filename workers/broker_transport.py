"""kombu's Redis transport, made to hand every message on a queue to the consumer.

kombu reads a Redis message's envelope — `json.loads` of the bytes, then its `Message`
(properties, delivery tag, body encoding) — inside the worker's event loop, before any
Celery hook can see it. Bytes that are not JSON, JSON that is not an envelope, or an
envelope whose body does not decode raise out of that loop: the worker's main process
exits and the message is lost with it.

This transport reads the envelope first. One it cannot read is replaced by a well-formed
envelope that carries the original bytes (the first `RAW_CAP`) and says why
(`UNREADABLE_HEADER`: `NOT_JSON`, `NOT_AN_ENVELOPE`, `UNDECODABLE_BODY`). It then flows
like any message — acknowledged, restored if its worker dies — to the consumer
(`workers.consumer.DeadLetterConsumer`), which records it in the dead-letter store.
The same reading guards the paths that put unacknowledged messages back on their queue.

`workers.app` selects it through Celery's `broker_transport` for `redis://` broker URLs.
The read methods are kombu 5.7's, with only the envelope reading changed;
`tests/unit/test_broker_transport.py` notices when kombu's own change.
"""

from __future__ import annotations

import base64
import json
import uuid
from queue import Empty
from typing import Any

from kombu.log import get_logger
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

logger = get_logger(__name__)

UNREADABLE_HEADER = "x_unreadable"
RAW_SIZE_HEADER = "x_raw_bytes"
UNREADABLE_CONTENT_TYPE = "application/x-unreadable-envelope"
RAW_CAP = 64 * 1024


def unreadable_envelope(raw: bytes | str, queue: str, reason: str) -> dict[str, Any]:
    """A kombu envelope for `queue` whose body is `raw` (capped), marked unreadable."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")
    return {
        "body": base64.b64encode(data[:RAW_CAP]).decode("ascii"),
        "content-encoding": "binary",
        "content-type": UNREADABLE_CONTENT_TYPE,
        "headers": {UNREADABLE_HEADER: reason, RAW_SIZE_HEADER: len(data)},
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "priority": 0,
            # The anonymous exchange routes by queue name: a restore puts it back here.
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }


def _is_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; an unacknowledged message goes back to its queue readable."""

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        def restore_transaction(pipe: Any) -> None:
            p = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            record = self.channel.unacked_record(p) if p else None
            if record:
                self.channel._do_restore_message(*record, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as client:
            client.transaction(restore_transaction, self.unacked_key)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; every message it reads is an envelope kombu can handle."""

    QoS = QoS

    def envelope(self, raw: bytes | str, queue: str) -> dict[str, Any]:
        """The envelope in `raw` — or, if kombu could not handle it, one carrying `raw`."""
        try:
            payload = loads(bytes_to_str(raw))
        except (json.JSONDecodeError, UnicodeError):
            return self._unreadable(raw, queue, "NOT_JSON")
        except Exception:  # kombu's hook for typed values (dates, uuids) refused one
            return self._unreadable(raw, queue, "NOT_AN_ENVELOPE")
        reason = self.problem_of(payload)
        return payload if reason is None else self._unreadable(raw, queue, reason)

    def problem_of(self, payload: Any) -> str | None:
        """Why kombu (or Celery's consumer) could not handle this decoded envelope; None
        if it can: the shape kombu's `Message` and the unacked index read, then a trial
        `Message`, which decodes the body's encoding (base64). A body that fails later —
        bad compression, JSON, UTF-8 — reaches Celery's decode-error hook as it is."""
        if not isinstance(payload, dict):
            return "NOT_AN_ENVELOPE"
        properties = payload.get("properties")
        if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
            return "NOT_AN_ENVELOPE"
        info = properties.get("delivery_info")
        if not isinstance(info, dict) or not all(
            isinstance(info.get(key), str) for key in ("exchange", "routing_key")
        ):
            return "NOT_AN_ENVELOPE"
        if not isinstance(payload.get("headers"), dict | None):
            return "NOT_AN_ENVELOPE"
        if not all(_is_text(payload.get(key)) for key in ("content-type", "content-encoding")):
            return "NOT_AN_ENVELOPE"
        if not _is_text(payload.get("body")):
            return "NOT_AN_ENVELOPE"
        try:
            self.Message(payload, channel=self)
        except Exception:
            return "UNDECODABLE_BODY"
        return None

    def _unreadable(self, raw: bytes | str, queue: str, reason: str) -> dict[str, Any]:
        logger.warning(
            "unreadable message on queue %r (%s): kept for the dead letters", queue, reason
        )
        return unreadable_envelope(raw, queue, reason)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                self.connection._deliver(self.envelope(item, dest), dest)
                return True
            else:
                raise Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return self.envelope(item, queue)

            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        """A broadcast (control commands, events) kombu cannot handle is dropped, as kombu
        drops one that is not JSON: it is no task, and its consumers could not even settle
        a stand-in."""
        reason = self.problem_of(message)
        if reason is not None:
            logger.warning("unreadable broadcast on exchange %r dropped (%s)", exchange, reason)
            return False
        return bool(super()._deliver_fanout_message(message, exchange))

    def unacked_record(self, raw: bytes | str) -> tuple[dict[str, Any], str, str] | None:
        """An unacknowledged message as kept in the unacked hash (`[envelope, exchange,
        routing key]`), its envelope readable; None if it names no queue to go back to."""
        try:
            envelope, exchange, routing_key = loads(bytes_to_str(raw))
        except Exception:
            queues = list(self.active_queues)
            if not queues:
                logger.critical("unreadable unacked message dropped: no queue to put it on")
                return None
            return self._unreadable(raw, queues[0], "NOT_AN_ENVELOPE"), "", queues[0]
        queue = str(routing_key)
        if self.problem_of(envelope) is not None:
            envelope = self._unreadable(dumps(envelope), queue, "NOT_AN_ENVELOPE")
        return envelope, str(exchange), queue

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        if not self.ack_emulation:
            return super()._restore(message)
        tag = message.delivery_tag

        def restore_transaction(pipe: Any) -> None:
            P = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            pipe.hdel(self.unacked_key, tag)
            record = self.unacked_record(P) if P else None
            if record:
                self._do_restore_message(*record, pipe, leftmost)

        with self.conn_or_acquire() as client:
            client.transaction(restore_transaction, self.unacked_key)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel
