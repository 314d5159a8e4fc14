"""Every Prometheus metric the product counts, in one place, each with a one-line helper.

Counted where the event happens — the vendor guard, the retry decision, a breaker's
transition, a run closing, a dead letter written — by whichever process it happens in. Under
a prefork worker that is a pool process: with `PROMETHEUS_MULTIPROC_DIR` set, each process
writes its own file there and `pipeline.metrics.exposition` adds them up at scrape time.
Breaker *state* is not counted here: it is read from Redis at scrape time
(`pipeline.metrics.breaker_state`), so it is right whichever process saw the transition.

Labels hold bounded values only — vendor, error or reason code, task name, run kind and
status, tenant ids (the one product dimension that grows) — never a run id, message or URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from pipeline.breakers.events import BreakerTransition
from pipeline.db.models import RunKind
from pipeline.errors import error_code

VENDOR_CALL_SECONDS = Histogram(
    "pipeline_vendor_call_duration_seconds",
    "Time of each call that reached a vendor (breaker and bulkhead refusals are not calls).",
    ["vendor"],
)
VENDOR_CALLS = Counter(
    "pipeline_vendor_calls",
    "Calls that reached a vendor, by outcome: ok, or the error code it failed with.",
    ["vendor", "outcome"],
)
RETRIES = Counter(
    "pipeline_retries",
    "Retries the retry policy scheduled (Celery task retries and in-process retries).",
    ["vendor", "code"],
)
BREAKER_TRANSITIONS = Counter(
    "pipeline_breaker_transitions",
    "Circuit-breaker transitions, counted once by the process whose script made them.",
    ["tenant", "vendor", "from_state", "to_state"],
)
DEAD_LETTERS = Counter(
    "pipeline_dead_letters",
    "Tasks written to the dead-letter store.",
    ["task"],
)
RUNS = Counter(
    "pipeline_runs",
    "Runs closed, by kind and outcome (succeeded, degraded, failed).",
    ["kind", "outcome"],
)
DEGRADED_REASONS = Counter(
    "pipeline_degraded_reasons",
    "Reasons on the items of closed runs, by reason code (the part before ':').",
    ["kind", "code"],
)

ITEMS_REDRIVEN = Counter(
    "pipeline_items_redriven",
    "Open items the reconciler re-drove because their message was lost, by run kind.",
    ["kind"],
)
ITEMS_HEALED = Counter(
    "pipeline_items_healed",
    "Deferred work redone once its vendor was back, by run kind and vendor.",
    ["kind", "vendor"],
)
# Written by the reconciler's pass, in whichever process ran it: the last pass is the truth.
ITEMS_OVERDUE = Gauge(
    "pipeline_items_overdue",
    "Open items that had not moved for longer than their lease at the last reconciler pass.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
RECONCILED_AT = Gauge(
    "pipeline_reconciler_last_pass_timestamp_seconds",
    "When the reconciler last finished a pass (Unix time): it should move every interval.",
    multiprocess_mode="mostrecent",
)

# The definitions above plus the breaker-state gauge make up what the product exports.
DEFINED = (
    VENDOR_CALL_SECONDS,
    VENDOR_CALLS,
    RETRIES,
    BREAKER_TRANSITIONS,
    DEAD_LETTERS,
    RUNS,
    DEGRADED_REASONS,
    ITEMS_REDRIVEN,
    ITEMS_HEALED,
    ITEMS_OVERDUE,
    RECONCILED_AT,
)

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def code_label(value: object) -> str:
    """An error or reason code fit for a label: codes (and exception class names) are short
    identifiers; anything else becomes OTHER, so no label can fill with free text."""
    text = str(value or "")
    return text if _CODE.match(text) else "OTHER"


def observe_vendor_call(vendor: str, seconds: float, error_code: str | None) -> None:
    VENDOR_CALL_SECONDS.labels(vendor).observe(seconds)
    VENDOR_CALLS.labels(vendor, "ok" if error_code is None else code_label(error_code)).inc()


def count_retry(error: BaseException) -> None:
    """A retry was scheduled for `error` (vendor '' for our own database dropping out)."""
    RETRIES.labels(getattr(error, "vendor", "") or "", code_label(error_code(error))).inc()


def count_breaker_transition(event: BreakerTransition) -> None:
    """A `TransitionSink`: see `pipeline.breakers.default_factory`."""
    BREAKER_TRANSITIONS.labels(
        str(event.tenant_id), event.vendor, event.from_state, event.to_state
    ).inc()


def count_dead_letter(task_name: str) -> None:
    """Call once per task written to the dead-letter store."""
    DEAD_LETTERS.labels(task_name).inc()


def count_closed_run(kind: str, outcome: str, item_reasons: Iterable[str]) -> None:
    """A run closed with `outcome`; `item_reasons` are its items' comma-joined reasons."""
    RUNS.labels(kind, outcome).inc()
    for joined in item_reasons:
        for reason in filter(None, joined.split(",")):
            DEGRADED_REASONS.labels(kind, code_label(reason.split(":", 1)[0])).inc()


def record_reconcile(
    redriven: Mapping[str, int], overdue: Mapping[str, int], finished_at: float
) -> None:
    """A reconciler pass finished at `finished_at`: what it re-drove and found overdue."""
    for kind in RunKind:
        if redriven.get(kind):
            ITEMS_REDRIVEN.labels(kind).inc(redriven[kind])
        ITEMS_OVERDUE.labels(kind).set(overdue.get(kind, 0))
    RECONCILED_AT.set(finished_at)


def count_healed(kind: str, vendors: Iterable[str]) -> None:
    """An item's deferred work for `vendors` was redone."""
    for vendor in vendors:
        ITEMS_HEALED.labels(kind, vendor).inc()
