"""The `pipeline` command as a user runs it, for tests of the CLI and of what it drives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO

# The console script `make install` puts beside the interpreter: what a user runs.
PIPELINE_SCRIPT = str(Path(sys.executable).parent / "pipeline")


def pipeline(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`pipeline ARGS...` as a user runs it: the installed script, in a process of its own."""
    return subprocess.run(
        [PIPELINE_SCRIPT, *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "companies.csv"
    path.write_text(text)
    return path
