"""The schema comes from Alembic and matches the models; bad settings stop start-up cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from pipeline.db.migrate import upgrade
from pipeline.db.models import Base
from tests.support.processes import REPO

TABLES = {"runs", "run_items", "vendor_calls", "breaker_events"}


def test_migration_matches_the_models_on_postgres(integration_env: dict[str, str]) -> None:
    engine = create_engine(integration_env["DATABASE_URL"])
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations drifted: {diff}"


def test_migration_builds_the_embedded_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pipeline.db'}"
    upgrade(url)
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RETRY_MAX_ATTEMPTS", "abc"), ("CB_ERROR_THRESHOLD", "0"), ("CB_VENDOR_OVERRIDES", "{")],
)
def test_a_bad_setting_stops_the_worker_naming_the_variable(variable: str, value: str) -> None:
    """`celery -A workers.app worker` ends with one line and exit 2, before any broker."""
    proc = _run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo"],
        **{variable: value},
    )
    assert proc.returncode == 2
    assert variable in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


IMPORT_THE_APP = """
from pipeline.errors import SettingsError
try:
    import workers.app
except SettingsError as exc:
    print("SettingsError:", exc)
"""


@pytest.mark.parametrize(("variable", "value"), [("RETRY_MAX_ATTEMPTS", "abc")])
def test_importing_the_app_with_a_bad_setting_raises_settings_error(
    variable: str, value: str
) -> None:
    """An import never ends the process (no SystemExit): the caller gets the product's
    SettingsError, naming the variable, to handle as it sees fit."""
    proc = _run([sys.executable, "-c", IMPORT_THE_APP], **{variable: value})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SettingsError:"), proc.stdout
    assert variable in proc.stdout


def test_a_bad_setting_stops_the_cli_naming_the_variable() -> None:
    proc = _run([sys.executable, "-m", "pipeline.cli", "check"], CB_COOL_OFF_S="soon")
    assert proc.returncode == 2
    assert "CB_COOL_OFF_S" in proc.stderr
    assert "Traceback" not in proc.stderr
