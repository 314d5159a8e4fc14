"""README's walkthrough, pasted into a shell in order, works.

The commands come out of README itself (`tests/support/walkthrough.py`), so the two cannot
drift. They run in one bash, in a scratch directory that looks like a checkout, against a
stack of their own: a private redis-server and an empty throw-away Postgres database (so
`pipeline db upgrade` is real), on free ports. The only thing the test changes is the value
of the `export` lines that name a machine: README's Redis, database and ports become the
private ones. Everything else — the worker, beat, the simulator, the API — is started by
README's own lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.settings import Settings
from tests.support.processes import PrivateRedis, free_port
from tests.support.stack import throwaway_database
from tests.support.walkthrough import run, walkthrough, with_overrides

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("Running it", "Web API", "Dead letters", "Credentials", "CRM sync and ERP export")
TRACEBACK = "Traceback (most recent call last)"


def scratch_checkout(path: Path) -> Path:
    """A directory whose entries are the checkout's (files a command writes land here)."""
    path.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}:
            (path / entry.name).symlink_to(entry)
    return path


def clean_environment() -> dict[str, str]:
    """The test process's environment without any of the product's settings, so README's
    "environment first" has to be complete on its own."""
    names = {name.upper() for name in Settings.model_fields} | {"PIPELINE_API_KEY"}
    return {key: value for key, value in os.environ.items() if key.upper() not in names}


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    commands = walkthrough(REPO / "README.md", SECTIONS)
    assert len(commands) >= 20, "README's walkthrough lost its commands"
    redis = PrivateRedis()
    try:
        with throwaway_database(prefix="pipeline_readme", migrate=False) as database_url:
            base = redis.url.rsplit("/", 1)[0]
            ours = {
                "BROKER_URL": f"{base}/0",
                "RESULT_BACKEND": f"{base}/1",
                "REDIS_URL": f"{base}/2",
                "DATABASE_URL": database_url,
                "VENDOR_BASE_URL": f"http://127.0.0.1:{free_port()}",
                "API_PORT": str(free_port()),
            }
            outcomes = run(
                [with_overrides(command, ours) for command in commands],
                cwd=scratch_checkout(tmp_path / "checkout"),
                env=clean_environment(),
                workdir=tmp_path / "outputs",
                timeout=420,
            )
    finally:
        redis.stop()

    assert outcomes, "the walkthrough ran nothing"
    for outcome in outcomes:
        where = f"[{outcome.command.section}] {outcome.command.first_line}"
        expected = 0 if outcome.command.background else outcome.command.exit_code
        assert outcome.exit_code == expected, f"{where}: exit {outcome.exit_code}\n{outcome.output}"
        assert TRACEBACK not in outcome.output, f"{where} printed a traceback\n{outcome.output}"
    ran = len(outcomes)
    assert ran == len(commands), f"stopped after {commands[ran - 1].first_line}"
