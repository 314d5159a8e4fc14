"""The import contracts in pyproject.toml ([tool.importlinter]) hold: `make lint` checks
them, and so does the test run, naming each contract so none can quietly disappear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = (
    "The simulator imports nothing else of the product",
    "Nothing imports the CLI; only the CLI's `pipeline api` command imports the API",
    "Only the API imports the web framework",
)


def test_every_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for name in CONTRACTS:
        assert f"{name} KEPT" in done.stdout, name
