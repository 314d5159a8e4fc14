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


def engine_for(url: str) -> Engine:
    engine = _engines.get(url)
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
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    url = url or get_settings().database_url
    factory = _sessions.get(url)
    if factory is None:
        factory = _sessions[url] = sessionmaker(engine_for(url), expire_on_commit=False)
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
