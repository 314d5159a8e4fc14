"""Poison messages pushed onto the queues mid-run, straight into Redis as a broken producer
would: a raw non-JSON message, JSON that is not an envelope, a pickle content type, an envelope
with empty headers, and a well-formed `crawl_site` for a run and item that do not exist.

The worker must survive all of them (and still serve the pipelines around them), and the
phantom `crawl_site` must not reach the crawler: the simulator counts calls per tenant, and the
phantom has a tenant of its own. How many of the five landed in the dead-letter store is
noted.
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from datetime import UTC, datetime
from typing import Any

from chaos.measure import Measurement
from chaos.processes import say
from chaos.trial import Scenario, Trial
from pipeline.dead_letters import UNRUNNABLE

PHANTOM_TENANT = 999_001
PHANTOM_ITEM = 2**40


def envelope(body: bytes, *, content_type: str, headers: dict[str, Any], queue: str) -> str:
    """A message as kombu's Redis transport stores it in a queue's list."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary" if "python" in content_type else "utf-8",
            "content-type": content_type,
            "headers": headers,
            "properties": {
                "correlation_id": str(uuid.uuid4()),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def task_headers(task: str) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}


def poison_messages() -> list[tuple[str, str | bytes]]:
    """(queue, what to push) for the four malformed messages."""
    step_body = json.dumps([[{"run_id": str(uuid.uuid4())}], {}, {}]).encode()
    harmless = pickle.dumps({"chaos": "a pickle must never be loaded"})
    return [
        ("default", b"chaos: \x00\xff this is not JSON"),
        ("critical", json.dumps({"chaos": "JSON, but not an envelope"})),
        (
            "export",
            envelope(
                harmless,
                content_type="application/x-python-serialize",
                headers=task_headers("tasks.export.export_run"),
                queue="export",
            ),
        ),
        (
            "default",
            envelope(step_body, content_type="application/json", headers={}, queue="default"),
        ),
    ]


def phantom_context() -> dict[str, Any]:
    return {
        "run_id": str(uuid.uuid4()),
        "item_id": PHANTOM_ITEM,
        "tenant_id": PHANTOM_TENANT,
        "company": {"id": PHANTOM_ITEM, "name": "Phantom", "domain": "phantom.example"},
        "had_contacts": False,
        "options": {
            "enable_tavily_fallback": True,
            "enable_apify_linkedin": True,
            "enable_lusha_fallback": False,
        },
        "reasons": [],
    }


def push_poison(trial: Trial) -> None:
    trial.mid_enrichment()
    trial.marks["pushed_at"] = datetime.now(UTC)
    trial.marks["worker"] = trial.stack.worker
    broker = trial.stack.redis_client(0)
    for queue, message in poison_messages():
        broker.lpush(queue, message)
    trial.stack.control.send_task("tasks.enrichment.crawl_site", args=[phantom_context()])
    say("pushed 4 malformed messages and a phantom crawl_site")


def check_poison(trial: Trial, m: Measurement) -> None:
    if trial.marks["worker"].proc.poll() is not None:
        trial.fail("the worker's main process died of the poison messages")
    elif not trial.stack.worker_answers(timeout=10):
        trial.fail("the worker no longer answers a ping after the poison messages")
    phantom = sum(
        int(calls.get(str(PHANTOM_TENANT), 0)) for calls in trial.admin.stats()["calls"].values()
    )
    if phantom:
        trial.fail(f"a step for a run that does not exist called vendors {phantom} times")
    since = trial.marks["pushed_at"]
    rows = trial.db.try_query(
        "SELECT count(*) FROM dead_letters WHERE first_failed_at >= %s AND path = ANY(%s)",
        (since, list(UNRUNNABLE)),
    )
    kept = rows[0][0] if rows else 0
    trial.note(f"dead-lettered {kept}/4 malformed messages; the phantom step did nothing")
    if kept != 4:
        trial.fail(f"{kept} of the 4 malformed messages are in dead_letters (once each)")


POISON = Scenario(
    "poison",
    "push malformed messages and a phantom crawl_site onto the queues mid-run",
    push_poison,
    check=check_poison,
)
