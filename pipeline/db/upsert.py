"""INSERT ... ON CONFLICT for both databases we run on (Postgres in production, SQLite
embedded): the one way we write rows that a repeated task may write again."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any) -> Any:
    """An `insert(table)` that knows `on_conflict_do_nothing/do_update` for this dialect."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)
