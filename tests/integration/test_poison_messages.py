"""No message of any shape stops a worker: each lands in the dead letters once, with its raw
bytes, and the worker goes on with the next.

Each shape is pushed straight onto the Redis list the worker consumes (as anyone with the
broker's address could), past kombu's producer. Real worker (prefork), Redis, Postgres."""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kombu import Connection

from pipeline import dead_letters
from pipeline.db.models import DeadLetter
from tests.support.processes import Worker, wait_until
from tests.support.vendor_stub import VendorStub
from workers.broker_transport import RAW_CAP, RAW_SIZE_HEADER, UNREADABLE_HEADER

pytestmark = pytest.mark.usefixtures("worker")
PRIORITY_9 = "default\x06\x169"  # kombu's list for priority 9 of queue `default`


def envelope(
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    **fields: Any,
) -> dict[str, Any]:
    """A message as kombu's Redis transport keeps it; `fields` replace top-level keys."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers if headers is not None else {},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": "default", "routing_key": "default"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
        **fields,
    }


def task_headers(task: str, task_id: str) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}


def task_body(marker: str) -> bytes:
    return json.dumps([[marker], {}, {"callbacks": None, "errbacks": None}]).encode()


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Shape:
    """A poison message: its bytes on the queue (given a marker), where it must land, and
    which bytes the entry keeps — all of them (unreadable envelope) or the body."""

    build: Callable[[str], bytes]
    path: str
    code: str
    kept: Callable[[str], bytes] | None = None  # None: the whole message
    queue: str = "default"


def _pickle_body(m: str) -> bytes:
    return pickle.dumps(([m], {}, {}))


def _proto1_body(m: str) -> bytes:
    return as_json({"task": "tests.fetch_vendor", "id": m, "args": [], "kwargs": "not a mapping"})


SHAPES: dict[str, Shape] = {
    "raw bytes, not JSON": Shape(
        lambda m: b"\x80\xff not json at all " + m.encode(), "not_an_envelope", "NOT_JSON"
    ),
    "raw bytes over 64 KiB": Shape(
        lambda m: m.encode() + b"\x00" * (RAW_CAP + 100), "not_an_envelope", "NOT_JSON"
    ),
    "raw bytes on a priority list": Shape(
        lambda m: b"<xml>" + m.encode(), "not_an_envelope", "NOT_JSON", queue=PRIORITY_9
    ),
    "JSON object, not an envelope": Shape(
        lambda m: as_json({"hello": m}), "not_an_envelope", "NOT_AN_ENVELOPE"
    ),
    "JSON array": Shape(lambda m: as_json([m, 1, 2]), "not_an_envelope", "NOT_AN_ENVELOPE"),
    "envelope without properties": Shape(
        lambda m: as_json(
            {k: v for k, v in envelope(b"", headers={"x": m}).items() if k != "properties"}
        ),
        "not_an_envelope",
        "NOT_AN_ENVELOPE",
    ),
    "envelope with garbled properties": Shape(
        lambda m: as_json(envelope(b"", headers={"x": m}, properties="garbled")),
        "not_an_envelope",
        "NOT_AN_ENVELOPE",
    ),
    "envelope without delivery info": Shape(
        lambda m: as_json(envelope(b"", properties={"delivery_tag": m})),
        "not_an_envelope",
        "NOT_AN_ENVELOPE",
    ),
    "envelope with headers of the wrong type": Shape(
        lambda m: as_json(envelope(b"", headers=["task", m])),  # type: ignore[arg-type]
        "not_an_envelope",
        "NOT_AN_ENVELOPE",
    ),
    "body that is not base64": Shape(
        lambda m: as_json({**envelope(b""), "body": m + "A"}), "undecodable", "UNDECODABLE"
    ),
    "pickle content": Shape(
        lambda m: as_json(
            envelope(
                _pickle_body(m),
                headers=task_headers("tests.fetch_vendor", m),
                content_type="application/x-python-serialize",
                content_encoding="binary",
            )
        ),
        "refused_content",
        "CONTENT_REFUSED",
        kept=_pickle_body,
    ),
    "yaml content": Shape(
        lambda m: as_json(
            envelope(
                f"- {m}".encode(),
                headers=task_headers("tests.fetch_vendor", m),
                content_type="application/x-yaml",
            )
        ),
        "refused_content",
        "CONTENT_REFUSED",
        kept=lambda m: f"- {m}".encode(),
    ),
    "empty headers": Shape(
        lambda m: as_json(envelope(task_body(m), headers={})),
        "no_task_name",
        "NO_TASK_NAME",
        kept=task_body,
    ),
    "no headers at all": Shape(
        lambda m: as_json({k: v for k, v in envelope(task_body(m)).items() if k != "headers"}),
        "no_task_name",
        "NO_TASK_NAME",
        kept=task_body,
    ),
    "unknown task": Shape(
        lambda m: as_json(envelope(task_body(m), headers=task_headers("tests.no_such_task", m))),
        "unknown_task",
        "UNKNOWN_TASK",
        kept=task_body,
    ),
    "unknown task without an id": Shape(
        lambda m: as_json(envelope(task_body(m), headers={"task": "tests.no_such_task"})),
        "unknown_task",
        "UNKNOWN_TASK",
        kept=task_body,
    ),
    "body compressed with an unknown codec": Shape(
        lambda m: as_json(
            envelope(
                task_body(m),
                headers={**task_headers("tests.fetch_vendor", m), "compression": "x-nope"},
            )
        ),
        "undecodable",
        "UNDECODABLE",
        kept=task_body,
    ),
    "JSON body that is not JSON": Shape(
        lambda m: as_json(
            envelope(b"{not json " + m.encode(), headers=task_headers("tests.fetch_vendor", m))
        ),
        "undecodable",
        "UNDECODABLE",
        kept=lambda m: b"{not json " + m.encode(),
    ),
    "JSON body that is not UTF-8": Shape(
        lambda m: as_json(
            envelope(
                b'["\xff\xfe' + m.encode() + b'"]', headers=task_headers("tests.fetch_vendor", m)
            )
        ),
        "undecodable",
        "UNDECODABLE",
        kept=lambda m: b'["\xff\xfe' + m.encode() + b'"]',
    ),
    "protocol-1 body with bad keyword arguments": Shape(
        lambda m: as_json(envelope(_proto1_body(m), headers={})),
        "invalid_task",
        "INVALID_TASK",
        kept=_proto1_body,
    ),
    "task header without an id": Shape(
        lambda m: as_json(envelope(task_body(m), headers={"task": "tests.fetch_vendor"})),
        "unprocessable",
        "KeyError",
        kept=task_body,
    ),
    "task name of the wrong type": Shape(
        lambda m: as_json(envelope(task_body(m), headers={"task": [m], "id": m})),
        "unprocessable",
        "TypeError",
        kept=task_body,
    ),
}


def entries_holding(marker: str) -> list[DeadLetter]:
    """Dead letters whose kept bytes contain `marker`."""
    needle = marker.encode()
    return [
        entry
        for entry in dead_letters.list_entries(limit=500)
        if needle in base64.b64decode((entry.options or {}).get("raw", ""))
    ]


def still_working(worker: Worker, celery_app: Any, stub: VendorStub, tenant: int) -> None:
    """The worker's main process is alive and runs a task sent now."""
    assert worker.proc.poll() is None, "the worker's main process exited"
    url = stub.script(f"after-poison-{uuid.uuid4().hex}", [200])
    result = celery_app.send_task(
        "tests.fetch_vendor", args=[url], kwargs={"tenant_id": tenant, "vendor": "crawler"}
    )
    assert result.get(timeout=30)["status"] == 200
    assert worker.proc.poll() is None, "the worker's main process exited"


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_poison_message_is_dead_lettered_once_and_the_worker_goes_on(
    name: str,
    integration_env: dict[str, str],
    worker: Worker,
    celery_app: Any,
    stub: VendorStub,
    tenant: int,
) -> None:
    shape = SHAPES[name]
    marker = uuid.uuid4().hex
    raw = shape.build(marker)
    broker = redis.Redis.from_url(integration_env["BROKER_URL"])
    broker.lpush(shape.queue, raw)

    entry = wait_until(lambda: entries_holding(marker), what=f"the dead letter of {name}")[0]
    assert (entry.path, entry.error_code, entry.failures) == (shape.path, shape.code, 1)
    kept = raw if shape.kept is None else shape.kept(marker)
    assert base64.b64decode(entry.options["raw"]) == kept[:RAW_CAP]
    assert entry.options["raw_bytes"] == len(kept)
    assert entry.options["body"] == kept[:8000].decode("utf-8", "replace")[:2000]
    assert entry.options["queue"] == "default"
    assert entry.status == "dead" and entry.message

    still_working(worker, celery_app, stub, tenant)
    wait_until(lambda: broker.hlen("unacked") == 0, what="every message to be settled")
    assert broker.llen(shape.queue) == 0, "the poison message is not back on its queue"
    assert [e.id for e in entries_holding(marker)] == [entry.id], "recorded once"


def test_an_unreadable_unacknowledged_message_goes_back_readable(
    integration_env: dict[str, str],
) -> None:
    """The paths that restore unacknowledged messages (a dead worker's, a rejected one)
    read them as the consumer does: garbage in the unacked hash goes back to its queue as
    a readable message carrying the garbage, for the consumer to dead-letter."""
    queue = f"restore-{uuid.uuid4().hex[:8]}"
    url = integration_env["BROKER_URL"]
    broker = redis.Redis.from_url(url)
    with Connection(url, transport="workers.broker_transport:Transport") as connection:
        simple = connection.SimpleQueue(queue)
        simple.consumer.consume()  # consuming `queue`: where a record naming none goes
        channel = simple.consumer.channel
        inner, outer = f"inner-{uuid.uuid4().hex}", f"outer-{uuid.uuid4().hex}"
        broker.hset("unacked", inner, json.dumps([inner, "", queue]))  # readable record
        broker.hset("unacked", outer, b"\x80 garbage " + outer.encode())  # unreadable record
        # Fresh entries: no worker's sweep for lost messages restores them before we do.
        broker.zadd("unacked_index", {inner: time.time(), outer: time.time()})
        channel.qos.restore_by_tag(inner)
        channel.qos.restore_by_tag(outer)
        received = [simple.get(timeout=5), simple.get_nowait()]  # BRPOP, then RPOP
        for message in received:
            message.ack()
        simple.close()
    assert [m.headers[UNREADABLE_HEADER] for m in received] == ["NOT_AN_ENVELOPE"] * 2
    bodies = sorted(m.body for m in received)
    assert bodies == sorted([json.dumps(inner).encode(), b"\x80 garbage " + outer.encode()])
    assert all(m.headers[RAW_SIZE_HEADER] == len(m.body) for m in received)
    assert broker.hmget("unacked", [inner, outer]) == [None, None]
    assert broker.zscore("unacked_index", inner) is None


def test_a_broadcast_that_is_no_envelope_is_dropped_and_the_worker_answers(
    integration_env: dict[str, str], worker: Worker, celery_app: Any
) -> None:
    """Control commands reach every worker over Redis pub/sub; a broadcast kombu cannot
    read as an envelope stopped the worker's main process too. It is dropped (as kombu
    drops one that is not JSON) and the worker still answers."""
    url = integration_env["BROKER_URL"]
    topic = f"/{url.rsplit('/', 1)[1]}.celery.pidbox"  # kombu's fanout channel for the mailbox
    broker = redis.Redis.from_url(url)
    no_properties = {k: v for k, v in envelope(b"{}").items() if k != "properties"}
    bad_base64 = {**envelope(b""), "body": "AAAAA"}
    for payload in (b"\x80 not json", as_json(["x"]), as_json(no_properties), as_json(bad_base64)):
        assert broker.publish(topic, payload) == 1, "the worker listens on this channel"
        assert celery_app.control.ping(destination=[worker.name], timeout=5), payload
        assert worker.proc.poll() is None
    assert worker.log_text().count("unreadable broadcast on exchange 'celery.pidbox'") == 3
