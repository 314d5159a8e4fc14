"""Our own services going away mid-run: Redis killed and restarted empty (no persistence: the
queues, unacknowledged messages, breaker state, leases and counters are all gone), Postgres
stopped for 20 s and for 60 s."""

from __future__ import annotations

import time
from pathlib import Path

from chaos.processes import kill_group, say
from chaos.trial import Scenario, Trial

RECONNECT_S = 30.0


def restart_redis_empty(trial: Trial) -> None:
    """Redis gone and back empty mid-enrichment. The worker and beat should reconnect by
    themselves; if they do not, they are restarted (as a supervisor would) and the row
    says so."""
    trial.mid_enrichment()
    stack = trial.stack
    stack.restart_redis_empty()
    restarted, worker_log = time.monotonic(), stack.worker.log_path.stat().st_size
    say("redis-server killed and restarted empty")
    if stack.worker_answers(timeout=RECONNECT_S):
        trial.note(f"worker answered {time.monotonic() - restarted:.0f}s after the restart")
    else:
        trial.note(f"worker gone or silent {RECONNECT_S:.0f}s after the restart: restarted")
        kill_group(stack.worker.proc, grace_s=2)
        stack.start_worker()
        worker_log = 0
    # Beat reconnected if the worker receives a periodic task sent through the new Redis.
    deadline = time.monotonic() + RECONNECT_S
    while not received_periodic(stack.worker.log_path, worker_log):
        if time.monotonic() > deadline:
            trial.note(f"no periodic task arrived within {RECONNECT_S:.0f}s: beat restarted")
            stack.restart_beat()
            break
        time.sleep(0.2)


def received_periodic(log: Path, offset: int) -> bool:
    with open(log, "rb") as text:
        text.seek(offset)
        return any(b"Task tasks.maintenance." in line and b"received" in line for line in text)


def postgres_outage(seconds: float) -> Scenario:
    def disrupt(trial: Trial) -> None:
        trial.mid_enrichment()
        stack = trial.stack
        stack.stop_postgres()
        say(f"postgres stopped for {seconds:.0f}s")
        back = time.monotonic() + seconds
        while time.monotonic() < back:  # the outage itself: its length is the scenario
            if stack.worker.proc.poll() is not None:
                trial.fail("the worker's main process died while Postgres was down")
                break
            time.sleep(0.5)
        stack.start_postgres()
        say("postgres is back")
        if stack.worker.proc.poll() is not None:
            stack.start_worker()

    return Scenario(
        f"postgres-{seconds:.0f}s", f"stop Postgres mid-enrichment for {seconds:.0f}s", disrupt
    )


REDIS_RESTART_EMPTY = Scenario(
    "redis-restart-empty",
    "kill redis-server mid-enrichment, start an empty one on the same port",
    restart_redis_empty,
)
POSTGRES_20S = postgres_outage(20)
POSTGRES_60S = postgres_outage(60)
