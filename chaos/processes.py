"""The processes of the chaos stack that are not in `tests.support`: `celery beat`, and
ending a process group for good (a worker whose main process was killed leaves its pool
children behind), and finding anything of ours still running at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.processes import REPO


def say(message: str) -> None:
    """Progress, on stderr (stdout holds the table)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Beat:
    """`celery -A workers.app beat`, its schedule file in the suite's directory."""

    def __init__(self, env: dict[str, str], directory: Path, number: int) -> None:
        self.log_path = directory / f"beat-{number}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "--schedule",
                str(directory / "beat-schedule"),
                "--loglevel",
                "INFO",
            ],
            cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        kill_group(self.proc)
        self._log.close()


def kill_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """End a process started in a session of its own and everything in its group (a main
    process already dead may have left pool children behind): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def quietly(action: Any, what: str) -> None:
    try:
        action()
    except Exception as exc:
        say(f"could not stop {what}: {type(exc).__name__}: {exc}")


def processes_mentioning(marks: list[str]) -> list[tuple[int, str]]:
    """Processes (not this one) whose command line holds one of `marks`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in command for mark in marks):
            found.append((int(entry), command))
    return found


def group_alive(pgid: int) -> bool:
    """Is any process of this process group still running (zombies aside)?"""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
