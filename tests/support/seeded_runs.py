"""Runs written straight into Postgres with a known history (healed, deferred, re-driven,
secrets in events), for the views that show them: `runs show` and `/runs`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from pipeline import runs
from pipeline.db.engine import session_scope
from pipeline.db.models import Deferral, DeferralStatus, ItemStatus, RunItem, RunKind

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


SECRET = "s3cr3t-Zq9"  # what must never be shown, wherever it hides in a stored event


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(minutes: float, name: str, **fields: Any) -> dict[str, Any]:
    return {"at": at(minutes).isoformat(), "event": name, **fields}


def healed_history(healed_min: float, vendor: str = "lusha") -> list[dict[str, Any]]:
    """What healing writes: the heal started (with the reasons before it), then healed."""
    return [
        event(
            healed_min - 1,
            "healing",
            status="degraded",
            reasons=f"CIRCUIT_OPEN:{vendor}",
            vendors=[vendor],
        ),
        event(healed_min, "healed", vendors=[vendor]),
    ]


REDRIVEN_HISTORY = [
    event(1, "redriven", why="lease", step="crawl_site"),
    event(2, "redriven", why="redis_reset", step="find_contacts:primary"),
]


@dataclass(frozen=True)
class SeededRun:
    run_id: uuid.UUID
    tenant: int
    items: dict[str, int]  # item key → id


def seeded_run(tenant: int, outcomes: dict[str, tuple[ItemStatus, list[str]]]) -> SeededRun:
    """A run whose items finished as given (key → status, reasons), through `pipeline.runs`."""
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, outcomes)
    ids = runs.item_ids(run_id)
    for key, (status, reasons) in outcomes.items():
        runs.finish_item(ids[key], status, reasons)
    return SeededRun(run_id, tenant, ids)


def write_item(item_id: int, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(RunItem).where(RunItem.id == item_id).values(**values))


def defer(
    run: SeededRun,
    key: str,
    vendor: str,
    reason: str,
    status: DeferralStatus,
    *,
    attempts: int = 0,
    next_try_min: float = 10,
    healed_min: float | None = None,
) -> None:
    with session_scope() as session:
        session.add(
            Deferral(
                tenant_id=run.tenant,
                vendor=vendor,
                kind=RunKind.ENRICHMENT,
                run_id=run.run_id,
                item_id=run.items[key],
                reason=reason,
                status=status,
                attempts=attempts,
                next_try_at=at(next_try_min),
                created_at=T0,
                healed_at=at(healed_min) if healed_min is not None else None,
            )
        )


def aftercare_run(tenant: int) -> SeededRun:
    """Four items: one healed (it was degraded by an open lusha breaker), one waiting for
    zerobounce (and given up on lusha), one being healed, one re-driven twice."""
    ok, degraded = ItemStatus.SUCCEEDED, ItemStatus.DEGRADED
    run = seeded_run(
        tenant,
        {
            "company:healed": (ok, []),
            "company:waiting": (degraded, ["ZEROBOUNCE_DEFER", "CIRCUIT_OPEN:lusha"]),
            "company:healing": (degraded, ["CIRCUIT_OPEN:crawler"]),
            "company:redriven": (ok, []),
        },
    )
    write_item(run.items["company:healed"], healed_at=at(5), history=healed_history(5))
    defer(run, "company:healed", "lusha", "CIRCUIT_OPEN:lusha", DeferralStatus.HEALED, attempts=1)
    defer(
        run, "company:waiting", "zerobounce", "ZEROBOUNCE_DEFER", DeferralStatus.WAITING, attempts=2
    )
    defer(run, "company:waiting", "lusha", "CIRCUIT_OPEN:lusha", DeferralStatus.EXPIRED, attempts=5)
    defer(
        run,
        "company:healing",
        "crawler",
        "CIRCUIT_OPEN:crawler",
        DeferralStatus.HEALING,
        attempts=1,
        next_try_min=12,
    )
    write_item(
        run.items["company:redriven"],
        redrives=2,
        history=REDRIVEN_HISTORY,
        step="record_item",
        progress_at=at(3),
    )
    return run


def with_secrets(run: SeededRun) -> None:
    """Give an item events and a deferral that carry a secret in every way they could:
    keys no event should have, free text in a name, a reason, a vendor."""
    key = "company:waiting"
    write_item(
        run.items[key],
        history=[
            {
                **event(6, "healed", vendors=["lusha", f"key={SECRET}"]),
                "token": SECRET,
                "message": f"https://user:{SECRET}@crm.example/oauth",
                "checkpoint": {"api_key": SECRET},
            },
            event(7, "redriven", why=f"Bearer {SECRET}", step="crawl_site"),
            event(8, "reopened", status="failed", reasons=f"CRM_REJECTED:bad,password {SECRET}"),
        ],
    )
    defer(run, key, "crm", f"CRM said: client secret {SECRET} refused", DeferralStatus.WAITING)
