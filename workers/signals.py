"""Hooks every cross-cutting concern into Celery's signals, once. Each concern is a module."""

from __future__ import annotations

import workers.correlation
import workers.fork_safety
import workers.logging_setup  # noqa: F401  JSON logs for worker and Celery records
