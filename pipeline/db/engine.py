"""One engine per database URL per process, and a transactional session scope.

Worker processes are forked from the Celery parent; `workers.signals` calls
`dispose_engines` in each child so no two processes share a pooled socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from pipeline.settings import get_settings

_engines: dict[str, Engine] = {}
_sessions: dict[str, sessionmaker[Session]] = {}


# Writes that are hints, not outcomes: their last few may be lost if Postgres itself
# crashes (`synchronous_commit=off`: the commit does not wait for the WAL flush), and what
# they say is only ever acted on later, idempotently (`pipeline.progress`).
HINTS = "hints"


def engine_for(url: str, *, purpose: str = "") -> Engine:
    """One engine per database URL (and purpose) per process. `HINTS` engines commit
    without waiting for the disk; everything that records an outcome uses the default."""
    name = f"{purpose}|{url}" if purpose else url
    engine = _engines.get(name)
    if engine is None and purpose == HINTS and not url.startswith("sqlite"):
        # No pre-ping either (a round trip per use, on the hottest path): a connection a
        # Postgres restart dropped fails its one write, is discarded, and the task retries.
        engine = create_engine(
            url,
            pool_recycle=1800,
            hide_parameters=True,
            connect_args={"options": "-c synchronous_commit=off"},
        )
        _engines[name] = engine
    if engine is None and purpose == HINTS:
        engine = _engines[name] = engine_for(url)
    if engine is None:
        if url.startswith("sqlite"):
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                hide_parameters=True,
            )
            event.listen(engine, "connect", _sqlite_for_many_threads)
        else:
            # Pre-ping: a connection dropped by a Postgres restart is replaced, not used.
            # hide_parameters: SQL errors must not carry contacts' data into logs.
            engine = create_engine(url, pool_pre_ping=True, pool_recycle=1800, hide_parameters=True)
        _engines[url] = engine
    return engine


def _sqlite_for_many_threads(connection: Any, _record: Any) -> None:
    """WAL lets readers work beside the one writer; the embedded worker has many threads."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def session_scope(url: str | None = None, *, purpose: str = "") -> Iterator[Session]:
    """A session that commits on success and rolls back on error (`purpose=HINTS`: on the
    engine whose commits do not wait for the disk)."""
    url = url or get_settings().database_url
    name = f"{purpose}|{url}" if purpose else url
    factory = _sessions.get(name)
    if factory is None:
        factory = _sessions[name] = sessionmaker(
            engine_for(url, purpose=purpose), expire_on_commit=False
        )
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def joined(session: Session | None) -> Iterator[Session]:
    """`session` if the caller has one (its transaction, its commit), else a new scope."""
    if session is not None:
        yield session
        return
    with session_scope() as own:
        yield own


def dispose_engines() -> None:
    """Forget pooled connections inherited across a fork (they belong to the parent)."""
    for engine in _engines.values():
        engine.dispose(close=False)
