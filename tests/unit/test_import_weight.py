"""Importing a light module stays light: `pipeline/__init__` looks its re-exports up on
first use, and `pipeline.errors` (imported by everything) needs neither Celery nor
SQLAlchemy. Each check runs a fresh interpreter, since this one has imported everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy.exc

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("celery", "sqlalchemy", "kombu", "pydantic", "requests")


def imported_by(statement: str) -> set[str]:
    """Top-level packages a fresh `python -X importtime -c statement` imports, read from
    the importtime report (one `import time: self | cumulative | name` line per module)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "pipeline" in names, "the importtime report was not read"
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("statement", ["import pipeline.errors", "import pipeline"])
def test_importing_the_taxonomy_loads_no_heavy_dependency(statement: str) -> None:
    loaded = imported_by(statement)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_report_does_name_heavy_modules_when_they_load() -> None:
    """The check above can fail: the same parser sees SQLAlchemy when it is imported."""
    assert "sqlalchemy" in imported_by("import pipeline.errors, pipeline.db.errors")


def test_lazy_re_exports_are_the_real_functions() -> None:
    import pipeline
    from pipeline import enqueue

    assert pipeline.enqueue_enrichment is enqueue.enqueue_enrichment
    assert pipeline.enqueue_crm_sync is enqueue.enqueue_crm_sync
    assert pipeline.enqueue_export is enqueue.enqueue_export
    assert set(pipeline.__all__) <= set(dir(pipeline))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = pipeline.no_such_name  # type: ignore[attr-defined]


def test_database_errors_still_come_from_the_taxonomy() -> None:
    from pipeline import errors
    from pipeline.errors import DATABASE_ERRORS

    assert sqlalchemy.exc.OperationalError in DATABASE_ERRORS
    assert errors.is_transient(sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception()))
    assert not errors.is_transient(ValueError("not ours"))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = errors.no_such_name
