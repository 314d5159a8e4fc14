"""What a scenario left behind, read from Postgres and the simulator — never from the
product's own code, so a bug there cannot hide itself.

Definitions (per scenario, over every run of its pipelines: each enrichment run it enqueued
and the stages whose `parent_run_id` is one of them):

- **items**: their run items.
- **lost**: items that are not *fine*. An item is fine if it is terminal with an account of
  itself — `succeeded`, or `degraded` / `failed` / `dead` with a non-empty reason — or if its
  task is in `dead_letters` (a row naming the item, or naming its run with no item: a run
  task). Everything else — open (`pending` / `queued` / `running`), or terminal without a
  reason — is lost.
- **duplicates**, per tenant at the simulator: CRM contacts beyond one per email, ERP
  partners beyond one per `ref`.
- **stuck**: runs not closed, plus closed runs whose next stage never started (no
  `handed_off_at`: the pipeline stalled between two stages), at the deadline.
- **healed / deferred**: rows of `deferrals` for the scenario's tenants with status `healed`
  / all rows (read defensively: 0/0 where the table is missing).

A scenario has *settled* when none of its runs is open, none waits to hand off, and none of
its deferrals waits (`waiting` / `healing`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psycopg2

OPEN_RUN = ("pending", "running")
TERMINAL_ITEM = ("succeeded", "degraded", "failed", "dead")
WAITING_DEFERRAL = ("waiting", "healing")


@dataclass
class Measurement:
    items: int = 0
    lost: int = 0
    duplicates: int = 0
    stuck: int = 0
    healed: int = 0
    deferred: int = 0
    lost_examples: list[str] = field(default_factory=list)
    stuck_examples: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)


class Database:
    """Short-lived psycopg2 connections to the chaos database: a poll during an outage is
    just `None`, never a broken pool."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.dsn = (
            f"host={parts.hostname} port={parts.port} user={parts.username or 'postgres'} "
            f"dbname={parts.path.lstrip('/')} connect_timeout=2"
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def try_query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        """The rows, or None while the database is away (or the table is missing)."""
        try:
            return self.query(sql, params)
        except psycopg2.Error:
            return None


def _ids(values: list[Any]) -> list[str]:
    return [str(v) for v in values]


class Observer:
    """Reads one scenario's pipelines (its first runs) and tenants."""

    def __init__(self, db: Database, firsts: list[Any], tenants: list[int]) -> None:
        self.db = db
        self.firsts = _ids(firsts)
        self.tenants = list(tenants)

    def runs(self) -> list[tuple[Any, ...]] | None:
        """(id, kind, status, then, handed_off_at, items_total) of every run of the pipelines."""
        return self.db.try_query(
            "SELECT id::text, kind, status, options->'then', handed_off_at, items_total "
            "FROM runs WHERE id::text = ANY(%s) OR parent_run_id::text = ANY(%s)",
            (self.firsts, self.firsts),
        )

    def deferrals(self) -> Counter[str] | None:
        rows = self.db.try_query(
            "SELECT status, count(*) FROM deferrals WHERE tenant_id = ANY(%s) GROUP BY status",
            (self.tenants,),
        )
        return None if rows is None else Counter({str(s): int(n) for s, n in rows})

    def closed(self) -> bool:
        """Every run closed, none waiting to hand off to its next stage."""
        runs = self.runs()
        return bool(runs) and all(
            status not in OPEN_RUN and not (then and handed is None)
            for _, _, status, then, handed, _ in runs or []
        )

    def settled(self) -> bool:
        if not self.closed():
            return False
        deferrals = self.deferrals()
        # A missing table (None) holds nothing that waits.
        return not deferrals or not any(deferrals[s] for s in WAITING_DEFERRAL)

    def kind_progress(self, kind: str) -> tuple[int, int] | None:
        """(terminal items, items) over the pipelines' runs of `kind`."""
        rows = self.db.try_query(
            "SELECT count(*) FILTER (WHERE i.status = ANY(%s)), count(*) FROM run_items i "
            "JOIN runs r ON r.id = i.run_id WHERE r.kind = %s "
            "AND (r.id::text = ANY(%s) OR r.parent_run_id::text = ANY(%s))",
            (list(TERMINAL_ITEM), kind, self.firsts, self.firsts),
        )
        return None if not rows else (int(rows[0][0]), int(rows[0][1]))

    def run_ids(self, kind: str) -> list[str]:
        return [run_id for run_id, k, *_ in self.runs() or [] if k == kind]

    def measure(
        self, crm: dict[int, list[dict[str, Any]]], erp: dict[int, list[dict[str, Any]]]
    ) -> Measurement:
        m = Measurement()
        runs = self.db.query(
            "SELECT id::text, kind, status, options->'then', handed_off_at FROM runs "
            "WHERE id::text = ANY(%s) OR parent_run_id::text = ANY(%s)",
            (self.firsts, self.firsts),
        )
        run_ids = [r[0] for r in runs]
        for run_id, kind, status, then, handed in runs:
            if status in OPEN_RUN:
                m.stuck += 1
                m.stuck_examples.append(f"{kind} run {run_id} still {status}")
            elif then and handed is None:
                m.stuck += 1
                m.stuck_examples.append(
                    f"{kind} run {run_id} closed, next stage {then} not started"
                )
        items = self.db.query(
            "SELECT i.id, i.run_id::text, r.kind, i.status, i.degraded_reasons, i.item_key "
            "FROM run_items i JOIN runs r ON r.id = i.run_id WHERE i.run_id::text = ANY(%s)",
            (run_ids,),
        )
        dead = self.db.query(
            "SELECT item_id, run_id::text FROM dead_letters WHERE run_id::text = ANY(%s)",
            (run_ids,),
        )
        dead_items = {int(item) for item, _ in dead if item is not None}
        dead_runs = {run for item, run in dead if item is None}
        statuses: Counter[str] = Counter()
        for item_id, run_id, kind, status, reasons, key in items:
            statuses[f"{kind}:{status}"] += 1
            accounted = status == "succeeded" or (status in TERMINAL_ITEM and bool(reasons))
            if accounted or item_id in dead_items or run_id in dead_runs:
                continue
            m.lost += 1
            if len(m.lost_examples) < 5:
                m.lost_examples.append(f"{kind} item {key} {status} reasons={reasons!r}")
        m.items = len(items)
        m.by_status = dict(sorted(statuses.items()))
        for tenant in self.tenants:
            emails = [c.get("email") for c in crm.get(tenant, []) if c.get("email")]
            refs = [p.get("ref") for p in erp.get(tenant, []) if p.get("ref")]
            m.duplicates += (len(emails) - len(set(emails))) + (len(refs) - len(set(refs)))
        deferrals = self.deferrals() or Counter()
        m.deferred, m.healed = sum(deferrals.values()), deferrals["healed"]
        return m
