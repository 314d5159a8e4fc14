"""Metrics in a prefork worker: one directory shared by its processes, served by the main one.

Set `PROMETHEUS_MULTIPROC_DIR` in the worker's environment (before it starts, so every pool
process inherits it) to a directory of its own, and optionally `WORKER_METRICS_PORT`:

- the main process empties the directory as the worker starts, before the pool forks —
  files left by an earlier run would otherwise be added to this run's figures;
- each pool process counts into its own files there (prometheus-client notices the fork);
- a pool process that exits hands its files back (`mark_process_dead`; it drops only live
  gauges' files — counters and histograms must keep counting what the process did);
- the main process serves `GET /metrics` on `WORKER_METRICS_PORT` (a bootstep, so it stops
  with the worker), adding up every process's files and reading breaker state from Redis;
- a closed run is counted by kind and outcome, with its items' reason codes, once committed.
"""

from __future__ import annotations

import glob
import os
import uuid
from typing import Any

import structlog
from celery import bootsteps
from celery.signals import worker_init, worker_process_shutdown
from prometheus_client import multiprocess
from sqlalchemy import select

from pipeline import metrics
from pipeline.db.engine import session_scope
from pipeline.db.models import Run, RunItem
from pipeline.metrics.exposition import serve
from pipeline.runs import when_run_closes
from pipeline.settings import get_settings
from workers.app import app

log = structlog.get_logger(__name__)


@worker_init.connect
def _empty_directory(**_: Any) -> None:
    directory = get_settings().prometheus_multiproc_dir
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)


@worker_process_shutdown.connect
def _process_exited(pid: int | None = None, **_: Any) -> None:
    directory = get_settings().prometheus_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(pid or os.getpid(), directory)


class MetricsServer(bootsteps.StartStopStep):
    """`GET /metrics` on WORKER_METRICS_PORT, in the worker's main process."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.server: Any = None

    def include_if(self, parent: Any) -> bool:
        return get_settings().worker_metrics_port is not None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        port = settings.worker_metrics_port
        assert port is not None  # include_if
        self.server, _ = serve(port, settings.worker_metrics_address)
        log.info("metrics.serving", port=port, address=settings.worker_metrics_address)

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


app.steps["worker"].add(MetricsServer)


def count_closed_run(run_id: uuid.UUID) -> None:
    """Runs after the close is committed, in the process that closed the run: once per run
    (a run closing again after a replay is not a new outcome)."""
    with session_scope() as session:
        kind, status, replays = session.execute(
            select(Run.kind, Run.status, Run.replays).where(Run.id == run_id)
        ).one()
        if replays:
            return
        reasons = session.scalars(
            select(RunItem.degraded_reasons).where(
                RunItem.run_id == run_id, RunItem.degraded_reasons != ""
            )
        ).all()
    metrics.count_closed_run(kind, status, reasons)


when_run_closes(count_closed_run)
