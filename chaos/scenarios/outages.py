"""Our own services going away mid-run: Redis killed and restarted empty (no persistence: the
queues, unacknowledged messages, breaker state, leases and counters are all gone), Postgres
stopped for 20 s and for 60 s."""

from __future__ import annotations

import time

from chaos.processes import say
from chaos.trial import Scenario, Trial

RECONNECT_S = 30.0


def restart_redis_empty(trial: Trial) -> None:
    trial.mid_enrichment()
    stack = trial.stack
    beat_log = stack.beat.log_size()
    stack.restart_redis_empty()
    restarted = time.monotonic()
    say("redis-server killed and restarted empty")
    if stack.worker_answers(timeout=RECONNECT_S):
        trial.note(f"worker reconnected in {time.monotonic() - restarted:.0f}s")
    else:
        trial.fail(f"worker did not reconnect within {RECONNECT_S:.0f}s (restarted)")
        stack.start_worker()
    deadline = time.monotonic() + RECONNECT_S
    while not stack.beat.sent_since(beat_log) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not stack.beat.sent_since(beat_log):
        trial.fail(f"beat sent nothing within {RECONNECT_S:.0f}s of the restart (restarted)")
        stack.restart_beat()


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
