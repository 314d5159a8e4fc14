"""Apply the Alembic migrations programmatically (the CLI and the tests use this), and say
which are still to apply (`pipeline check`, and the CLI's message for a database that is
behind)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from alembic import command

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
UPGRADE_HINT = "run `pipeline db upgrade`"


def _config(url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(_config(url), revision)


def pending_migrations(url: str) -> list[str]:
    """The revisions the database at `url` lacks, oldest first (empty: it is up to date).
    Reads only the version table; raises SQLAlchemy's errors if the database is down."""
    from pipeline.db.engine import engine_for

    script = ScriptDirectory.from_config(_config(url))
    with engine_for(url).connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    known = {rev.revision for rev in script.walk_revisions()}
    if current - known:
        return []  # a revision newer than this code knows: not ours to call it behind
    applied = {rev.revision for head in current for rev in script.iterate_revisions(head, "base")}
    return [
        rev.revision
        for rev in reversed(list(script.walk_revisions()))
        if rev.revision not in applied
    ]
