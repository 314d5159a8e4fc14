"""Hooks every cross-cutting concern into Celery's signals, once. Each concern is a module;
importing it connects its handlers."""

from __future__ import annotations

from workers import (
    attempts,
    correlation,
    dead_letters,
    fork_safety,
    logging_setup,
    metrics,
    stages,
)

HOOKS = (
    attempts,  # attempts and last error code on run items
    correlation,  # correlation id in task headers and in every log line
    dead_letters,  # every way a task dies ends in the dead-letter store
    fork_safety,  # no pooled connection shared across forked children
    logging_setup,  # JSON logs for our records and Celery's
    metrics,  # Prometheus: multiprocess directory, metrics port, closed runs counted
    stages,  # a closed run with `then=[...]` starts its next stage
)
