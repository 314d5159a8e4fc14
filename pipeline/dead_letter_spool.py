"""Dead letters that could not be written wait here, in a capped Redis list.

`pipeline.dead_letters.record` spools an entry when the database is unreachable, so a death
is not lost with the outage; `pipeline.dead_letters.drain_spool` (the reconciler calls it)
writes each entry once the database is back and only then takes it off the list, so an
entry is never lost between the two, and one written twice is still one row (rows are
unique per task id). Entries hold what a dead-letter row holds — ids, codes, messages, a
traceback, a message's first bytes — never a secret.

The list keeps the newest `DEAD_LETTER_SPOOL_MAX` entries (a longer outage drops the oldest,
and says so); each entry's traceback and raw bytes are trimmed first, so the list stays
small (an entry is a few KB plus its task's arguments and chain, which tasks keep small:
ids and a step context).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from pipeline.redis_client import redis_for
from pipeline.settings import get_settings

log = structlog.get_logger(__name__)
SPOOLED_TRACEBACK = 4000
SPOOLED_RAW = 4096
_TIMES = ("first_failed_at", "last_failed_at")


class DeadLetterSpool:
    """One Redis list of dead-letter rows (JSON), newest at the head."""

    def __init__(self, client: Any, key: str, limit: int) -> None:
        self.client, self.key, self.limit = client, key, limit

    @classmethod
    def from_settings(cls) -> DeadLetterSpool:
        settings = get_settings()
        return cls(
            redis_for(settings.redis_url),
            f"{settings.redis_key_prefix}:dead_letters:spool",
            settings.dead_letter_spool_max,
        )

    def push(self, row: Mapping[str, Any]) -> bool:
        """Spool `row`; False (logged) if Redis cannot take it either."""
        try:
            pipe = self.client.pipeline()
            pipe.lpush(self.key, encode(trimmed(row)))
            pipe.ltrim(self.key, 0, self.limit - 1)
            length = int(pipe.execute()[0])
        except Exception as error:  # Redis down too (or the embedded stand-in): give up
            log.error("dead_letter.lost", task_id=row["task_id"], error=type(error).__name__)
            return False
        if length > self.limit:
            log.error("dead_letter.spool_full", dropped=length - self.limit, limit=self.limit)
        log.warning("dead_letter.spooled", task_id=row["task_id"], path=row["path"])
        return True

    def drain(
        self, write: Callable[[dict[str, Any]], Any], *, stop_on: tuple[type[BaseException], ...]
    ) -> int:
        """`write` each entry, oldest first, and take it off the list once written; how
        many were. An error in `stop_on` (the database down again) or from Redis ends the
        drain with the entry kept; any other error means the database refuses that entry
        for good, so it is logged and dropped rather than block the spool."""
        done = 0
        try:
            while (raw := self.client.lindex(self.key, -1)) is not None:
                try:
                    write(decode(raw))
                except stop_on as error:
                    log.warning("dead_letter.spool_not_drained", error=type(error).__name__)
                    return done
                except Exception as error:
                    log.error("dead_letter.spool_entry_dropped", error=type(error).__name__)
                self.client.lrem(self.key, -1, raw)
                done += 1
        except Exception as error:  # Redis unreachable: what is spooled stays spooled
            log.warning("dead_letter.spool_not_drained", error=type(error).__name__)
        return done

    def size(self) -> int:
        return int(self.client.llen(self.key))


def trimmed(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with its traceback's end and its raw bytes' start only, marked if cut."""
    out = dict(row)
    options = dict(out.get("options") or {})
    cut = len(out.get("traceback") or "") > SPOOLED_TRACEBACK
    out["traceback"] = (out.get("traceback") or "")[-SPOOLED_TRACEBACK:]
    raw = base64.b64decode(options.get("raw") or "")
    if len(raw) > SPOOLED_RAW:
        options["raw"] = base64.b64encode(raw[:SPOOLED_RAW]).decode("ascii")
        cut = True
    out["options"] = {**options, **({"spool_trimmed": True} if cut else {})}
    return out


def encode(row: Mapping[str, Any]) -> str:
    def default(value: Any) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        raise TypeError(f"cannot spool a {type(value).__name__}")

    return json.dumps(row, default=default)


def decode(raw: bytes | str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(raw)
    for key in _TIMES:
        row[key] = datetime.fromisoformat(row[key])
    row["run_id"] = uuid.UUID(row["run_id"]) if row.get("run_id") else None
    return row
