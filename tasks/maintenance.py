"""Periodic housekeeping, run by `celery -A workers.app beat` (schedule in `workers.app`):
the reconciler (`pipeline.reconciler`), wired here to this Celery app's broker and tasks."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from kombu.exceptions import ChannelError, OperationalError

from pipeline import progress
from pipeline.enqueue import RUN_TASKS, send_run
from pipeline.healing import Healer, vendor_back
from pipeline.reconciler import Reconciler, ReconcileReport
from pipeline.reconciler_marks import RedisEpoch
from pipeline.redis_client import redis_for
from pipeline.settings import Settings, get_settings
from pipeline.stages import sweep_pipelines as sweep
from pipeline.vendors.registry import GUARDED_VENDORS
from tasks.enrichment import heal_chain, resume_chain
from workers.app import ROUTES, app

log = structlog.get_logger(__name__)


class CeleryBroker:
    """What the reconciler sees of this app's broker: queue depths, and the epoch of each
    Redis we depend on (the broker's, when it is Redis, and REDIS_URL's)."""

    def __init__(self, celery_app: Any, settings: Settings) -> None:
        self.app, self.settings = celery_app, settings

    def queue_of(self, kind: str) -> str:
        task = RUN_TASKS[kind]  # type: ignore[index]
        pattern = f"{task.rsplit('.', 1)[0]}.*"
        return str(ROUTES.get(pattern, {}).get("queue", "default"))

    def depth(self, queue: str) -> int | None:
        try:
            with self.app.connection_for_read() as conn:
                declared = conn.default_channel.queue_declare(queue=queue, passive=True)
                return int(declared.message_count)
        except ChannelError:  # no such queue (an empty Redis list does not exist): empty
            return 0
        except (OperationalError, OSError) as exc:
            log.warning("reconciler.depth_unknown", queue=queue, error=type(exc).__name__)
            return None

    def epochs(self) -> list[RedisEpoch]:
        key = f"{self.settings.redis_key_prefix}:epoch"
        named = {"broker": self.settings.broker_url, "state": self.settings.redis_url}
        seen: dict[str, str] = {}
        for name, url in named.items():
            if url.startswith(("redis://", "rediss://")) and url not in seen.values():
                seen[name] = url
        return [RedisEpoch(name, redis_for(url), key, url=url) for name, url in seen.items()]


class CeleryDispatch:
    """How the reconciler sends work again: an enrichment item from its checkpoint step (or
    just its missing steps, to heal it), a run through its run task."""

    def resume(self, item: progress.OpenItem) -> None:
        assert item.step and item.checkpoint
        resume_chain(item.step, item.checkpoint)

    def heal_steps(self, steps: list[str], ctx: dict[str, Any]) -> None:
        heal_chain(steps, ctx)

    def resend_run(self, kind: str, run_id: uuid.UUID) -> None:
        send_run(kind, run_id, uuid.uuid4().hex, fail_if_unsent=False)


def reconciler(settings: Settings | None = None) -> Reconciler:
    settings = settings or get_settings()
    dispatch = CeleryDispatch()
    healer = Healer(settings, dispatch, vendor_back=vendor_back, vendors=GUARDED_VENDORS)
    return Reconciler(settings, CeleryBroker(app, settings), dispatch, healer=healer)


@app.task(name="tasks.maintenance.reconcile", ignore_result=True, acks_late=True)
def reconcile() -> dict[str, Any]:
    """One reconciler pass (see `pipeline.reconciler`)."""
    report: ReconcileReport = reconciler().run()
    return report.as_dict()


@app.task(name="tasks.maintenance.sweep_pipelines", ignore_result=True, acks_late=True)
def sweep_pipelines() -> int:
    """Start next stages and re-send stage runs that a crash or a down broker left behind
    (also part of every reconciler pass; kept for messages an older beat still sends)."""
    return sweep()
