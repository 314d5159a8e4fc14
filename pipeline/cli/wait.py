"""`--wait`: follow a pipeline from its first run to its last stage, showing each stage.

A line when each stage starts, its details (`pipeline runs show`) when it ends; the exit
code says how it ended: 0 every run succeeded or degraded, 1 a run failed (the pipeline
stopped there), 4 `--timeout` ran out (the work goes on). Before waiting it looks for a
worker: with none answering, nothing would ever move, so it stops at once with exit 3 and
the command that starts one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import click
from rich.console import Console

from pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    WORKER_COMMAND,
)

POLL_S = 0.3


def wait_for_pipeline(
    first_run_id: uuid.UUID,
    timeout: float,
    *,
    console: Console | None = None,
    quiet: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow the pipeline that starts with `first_run_id` until it settles; its exit code.
    `quiet`: print nothing on the way (a script reads the exit code; errors still go to
    stderr)."""
    from pipeline.cli.check import live_workers
    from pipeline.cli.render import console as render_console
    from pipeline.db.models import FINISHED_RUN_STATUSES
    from pipeline.pipeline_state import pipeline_state

    console = console or render_console()
    if not live_workers():
        click.echo(
            f"pipeline: no worker answered, so run {first_run_id} waits on its queue; start "
            f"one: {WORKER_COMMAND}",
            err=True,
        )
        return EXIT_UNAVAILABLE
    deadline = clock() + timeout
    announced: set[uuid.UUID] = set()
    shown: set[uuid.UUID] = set()
    while True:
        state = pipeline_state(first_run_id)
        if state is None:  # deleted meanwhile
            click.echo(f"pipeline: run {first_run_id} is gone", err=True)
            return EXIT_FAILED
        for number, run in enumerate(state.runs, start=1):
            if run.id not in announced and not quiet:
                announced.add(run.id)
                click.echo(f"stage {number}: {run.kind} run {run.id} ({run.status})")
            finished = run.status in FINISHED_RUN_STATUSES
            if finished and run.id not in shown and not quiet:
                shown.add(run.id)
                show_run(console, run.id)
        if state.settled:
            last = state.current
            outcome = "failed" if state.failed else last.status
            stages = len(state.runs)
            if quiet:
                return EXIT_FAILED if state.failed else EXIT_OK
            click.echo(
                f"pipeline of run {first_run_id} finished: {outcome} "
                f"({stages} {'stage' if stages == 1 else 'stages'})"
            )
            return EXIT_FAILED if state.failed else EXIT_OK
        if clock() > deadline:
            current = state.current
            click.echo(
                f"pipeline: {current.kind} run {current.id} is still {current.status} after "
                f"{timeout:g}s (it goes on; `pipeline runs show {current.id}` follows it)",
                err=True,
            )
            return EXIT_TIMEOUT
        sleep(POLL_S)


def show_run(console: Console, run_id: uuid.UUID) -> None:
    from pipeline.cli.render import run_details
    from pipeline.run_details import read_run_details

    details = read_run_details(run_id)
    if details is not None:
        console.print(run_details(details))
