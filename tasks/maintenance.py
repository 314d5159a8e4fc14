"""Periodic housekeeping, run by `celery -A workers.app beat` (schedule in `workers.app`)."""

from __future__ import annotations

from pipeline.stages import sweep_pipelines as sweep
from workers.app import app


@app.task(name="tasks.maintenance.sweep_pipelines", ignore_result=True, acks_late=True)
def sweep_pipelines() -> int:
    """Start next stages and re-send stage runs that a crash or a down broker left behind."""
    return sweep()
