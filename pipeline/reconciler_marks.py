"""What the reconciler knows between passes, kept in Postgres (`reconciler_marks`).

Each pass runs in whichever worker took the beat task, so nothing is kept in memory:
- **epochs** — a random value the reconciler leaves in each Redis it depends on (the
  broker's and the one holding breakers, leases and tokens), and the same value here. A
  Redis that comes back without its epoch restarted empty: every message it held is gone
  (and every breaker it held is closed), so the open items that last moved before that are
  re-driven at once, without waiting out a lease;
- **drained** — when each queue was last seen empty. A message that was on a queue seen
  empty since has left it: it is running, held by a worker until its countdown, or lost.
  Only then can a silence be blamed on a lost message rather than a long queue.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import redis
import structlog
from sqlalchemy import select

from pipeline.db.engine import session_scope
from pipeline.db.models import ReconcilerMark, aware, utcnow
from pipeline.db.upsert import insert_for

log = structlog.get_logger(__name__)


def read_mark(name: str) -> ReconcilerMark | None:
    with session_scope() as session:
        mark = session.get(ReconcilerMark, name)
    if mark is not None:
        mark.at = aware(mark.at)
    return mark


def write_mark(name: str, value: str = "", at: datetime | None = None) -> None:
    row = {"name": name, "value": value, "at": at or utcnow()}
    with session_scope() as session:
        statement = insert_for(session, ReconcilerMark).values(row)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["name"], set_={"value": row["value"], "at": row["at"]}
            )
        )


def marks(prefix: str) -> dict[str, ReconcilerMark]:
    """Every mark whose name starts with `prefix`, by the rest of its name."""
    with session_scope() as session:
        rows = list(
            session.scalars(select(ReconcilerMark).where(ReconcilerMark.name.startswith(prefix)))
        )
    for row in rows:
        row.at = aware(row.at)
    return {row.name.removeprefix(prefix): row for row in rows}


class RedisEpoch:
    """The epoch kept in one Redis (`name`: what that Redis is to us, e.g. `broker`)."""

    def __init__(
        self, name: str, client: redis.Redis, key: str, *, holds_state: bool = False
    ) -> None:
        """`holds_state`: this Redis keeps breakers, leases and tokens (REDIS_URL's)."""
        self.name, self.client, self.key, self.holds_state = name, client, key, holds_state

    def check(self, now: datetime) -> datetime | None:
        """When this Redis was found to have restarted empty (now), or None. A Redis that
        cannot be reached proves nothing: it is checked again on the next pass."""
        try:
            there = self.client.get(self.key)
        except redis.RedisError as exc:
            log.warning("reconciler.epoch_unreadable", redis=self.name, error=type(exc).__name__)
            return None
        mark = read_mark(f"epoch:{self.name}")
        if there is not None and mark is not None and _text(there) == mark.value:
            return None
        epoch = uuid.uuid4().hex
        try:
            self.client.set(self.key, epoch)
        except redis.RedisError as exc:
            log.warning("reconciler.epoch_unwritable", redis=self.name, error=type(exc).__name__)
            return None
        write_mark(f"epoch:{self.name}", epoch, now)
        if there is None and mark is not None:  # it had our epoch, and lost it
            log.error("reconciler.redis_reset", redis=self.name)
            write_mark(f"reset:{self.name}", epoch, now)
            return now
        return None  # first pass ever, or another reconciler's epoch: nothing was lost


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
