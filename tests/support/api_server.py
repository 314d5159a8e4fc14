"""`pipeline api` as a real process on loopback, and API keys made by `pipeline apikeys`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.support.cli import pipeline
from tests.support.processes import REPO, free_port, wait_until


class ApiServer:
    """`pipeline api` (or, given `command`, another module serving through
    `pipeline.api.server.serve`, its last argument the port) on a free loopback port."""

    def __init__(self, log_path: Path, command: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        port = str(self.port)
        args = [*command, port] if command else ["pipeline.cli", "api", "--port", port]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=30, what="pipeline api to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pipeline api exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log_lines(self) -> list[dict[str, Any]]:
        self._log.flush()
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


def create_key(*args: str) -> str:
    result = pipeline("apikeys", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[0]
