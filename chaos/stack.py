"""The chaos stack: a private redis-server, a private Postgres cluster, the vendor simulator,
a prefork worker and `celery beat` — all started by the suite, all ended by it.

Started once for the whole suite; a scenario that breaks a part (kills the worker, restarts
Redis, stops Postgres) does so through the methods here, which keep track of every process
so that `close()` ends them all: also after Ctrl-C or a failing scenario. Worker and beat
log to files in the suite's temporary directory; `log_tails()` shows their last lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chaos.processes import Beat, kill_group, processes_mentioning, quietly, say
from chaos.settings import build_env, check_private
from tests.support.processes import PrivatePostgres, PrivateRedis, Worker
from tests.support.stack import SimulatorProcess

SIMULATOR_SEED = 9
WORKER_CONCURRENCY = 2
PING_TIMEOUT_S = 0.5
# Log lines of the periodic tasks, left out of the tails shown when a scenario fails.
ROUTINE = ("tasks.maintenance.", "Sending due task")


class ChaosStack:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pipeline-chaos-"))
        self.redis: PrivateRedis | None = None
        self.pg: PrivatePostgres | None = None
        self.sim: SimulatorProcess | None = None
        self.env: dict[str, str] = {}
        self.database_url = ""
        self.workers: list[Worker] = []
        self.beats: list[Beat] = []
        self.control: Any = None

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        from pipeline.db.migrate import upgrade

        say(f"starting the stack in {self.dir}")
        self.redis = PrivateRedis()
        self.pg = PrivatePostgres()
        self.database_url = self.pg.create_database("chaos")
        upgrade(self.database_url)
        self.sim = SimulatorProcess(SIMULATOR_SEED)
        self.env = build_env(
            redis_port=self.redis.port, database_url=self.database_url, simulator_url=self.sim.url
        )
        say(
            f"redis :{self.redis.port}, postgres :{self.pg.port}, simulator {self.sim.url}, "
            f"logs in {self.dir}"
        )

    def launch(self, settings: Any) -> None:
        """With this process pointed at the stack (`tests.support.stack.environment`):
        check where the settings lead, then start the worker and beat."""
        from workers.app import create_app

        assert self.redis is not None
        check_private(
            {
                "BROKER_URL": settings.broker_url,
                "RESULT_BACKEND": settings.result_backend,
                "REDIS_URL": settings.redis_url,
                "DATABASE_URL": settings.database_url,
            },
            redis_port=self.redis.port,
        )
        self.control = create_app()
        self.start_worker()
        self.start_beat()

    def close(self) -> None:
        """End every process the suite started; safe to call twice, and one part failing to
        stop does not keep the others running."""
        marks = [str(self.dir), *(w.name for w in self.workers)]
        if self.pg is not None:
            marks.append(self.pg.dir)
        if self.redis is not None:
            marks.append(f"redis-server 127.0.0.1:{self.redis.port}")
        for worker in self.workers:
            quietly(lambda w=worker: kill_group(w.proc), "a worker")
            quietly(worker._log.close, "a worker log")
        for beat in self.beats:
            quietly(beat.stop, "beat")
        self.workers, self.beats = [], []
        if self.sim is not None:
            quietly(self.sim.admin.close, "the simulator client")
            quietly(self.sim.stop, "the simulator")
            self.sim = None
        if self.redis is not None:
            quietly(self.redis.stop, "redis-server")
            self.redis = None
        if self.pg is not None:
            quietly(self.pg.close, "postgres")
            self.pg = None
        for pid, command in processes_mentioning(marks):
            say(f"left over, killed: {pid} {command[:120]}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- worker and beat -----------------------------------------------------------------------

    @property
    def worker(self) -> Worker:
        return self.workers[-1]

    @property
    def beat(self) -> Beat:
        return self.beats[-1]

    def start_worker(self) -> Worker:
        number = len(self.workers) + 1
        worker = Worker(
            self.env,
            self.dir / f"worker-{number}.log",
            concurrency=WORKER_CONCURRENCY,
            name=f"chaos{number}",
            app_module="workers.app",
        )
        self.workers.append(worker)
        worker.wait_ready(self.control, timeout=60)
        return worker

    def start_beat(self) -> Beat:
        beat = Beat(self.env, self.dir, len(self.beats) + 1)
        self.beats.append(beat)
        return beat

    def restart_beat(self) -> Beat:
        self.beat.stop()
        return self.start_beat()

    def worker_answers(self, timeout: float = 10.0) -> bool:
        """Does the current worker answer a ping within `timeout`?"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.worker.proc.poll() is not None:
                return False
            with contextlib.suppress(Exception):
                if self.control.control.ping(
                    destination=[self.worker.name], timeout=PING_TIMEOUT_S
                ):
                    return True
            time.sleep(0.2)
        return False

    def kill_worker_main(self) -> int:
        """SIGKILL the worker's main process (its pool children are left to themselves)."""
        pid = self.worker.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.worker.proc.wait(timeout=10)
        return pid

    def active_tasks(self) -> list[dict[str, Any]]:
        """What the current worker's pool is running now (`inspect active`)."""
        try:
            replies = (
                self.control.control.inspect(destination=[self.worker.name], timeout=1.0).active()
                or {}
            )
        except Exception:
            return []
        return [task for tasks in replies.values() for task in tasks or []]

    def pool_pid_running(self, task_names: Iterable[str], run_ids: Iterable[str]) -> int | None:
        """The pool process running one of `task_names` for one of `run_ids`, if any."""
        names, runs = set(task_names), {str(r) for r in run_ids}
        for task in self.active_tasks():
            args = task.get("args") or []
            first = args[0] if args else None
            run = first.get("run_id") if isinstance(first, dict) else first
            if task.get("name") in names and str(run) in runs and task.get("worker_pid"):
                return int(task["worker_pid"])
        return None

    # -- Redis and Postgres --------------------------------------------------------------------

    def restart_redis_empty(self) -> None:
        """Kill redis-server and start a new, empty one on the same port (no persistence)."""
        assert self.redis is not None
        self.redis.stop()
        self.redis.start()

    def stop_postgres(self) -> None:
        assert self.pg is not None
        self.pg.stop("fast")

    def start_postgres(self) -> None:
        assert self.pg is not None
        self.pg.start()

    def redis_client(self, db: int = 0) -> Any:
        import redis

        assert self.redis is not None
        return redis.Redis(port=self.redis.port, db=db, socket_timeout=2)

    # -- diagnosis -----------------------------------------------------------------------------

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each worker and beat log, leaving out the periodic tasks'
        routine lines (every couple of seconds, they would fill the tail)."""
        parts = []
        for path in [w.log_path for w in self.workers] + [b.log_path for b in self.beats]:
            with contextlib.suppress(OSError):
                text = [
                    line
                    for line in path.read_text(errors="replace").splitlines()
                    if not any(routine in line for routine in ROUTINE)
                ][-lines:]
                parts.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def ensure_healthy(self) -> list[str]:
        """Between scenarios: a worker answering and beat alive, restarted if not; what was
        done."""
        done = []
        if not self.worker_answers(timeout=15):
            kill_group(self.worker.proc, grace_s=2)
            self.start_worker()
            done.append("worker restarted")
        if not self.beat.alive():
            self.start_beat()
            done.append("beat restarted")
        return done
