"""Periodic housekeeping, run by `celery -A workers.app beat` (schedule in `workers.app`):
the reconciler (`pipeline.reconciler`), wired here to this Celery app's broker and tasks."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import structlog
from kombu.exceptions import ChannelError, OperationalError

from pipeline import progress
from pipeline.db.models import RunKind
from pipeline.enqueue import RUN_TASKS, send_run
from pipeline.errors import DATABASE_ERRORS, PipelineError
from pipeline.healing import Healer
from pipeline.reconciler import Reconciler, ReconcileReport
from pipeline.reconciler_marks import RedisEpoch
from pipeline.redis_client import redis_for
from pipeline.resilience.guard import vendor_guard
from pipeline.settings import Settings, get_settings
from pipeline.stages import sweep_pipelines as sweep
from pipeline.vendors import registry
from pipeline.vendors.registry import GUARDED_VENDORS
from tasks.enrichment import heal_chain, resume_chain
from workers.app import app

log = structlog.get_logger(__name__)


class CeleryBroker:
    """What the reconciler sees of this app's broker: queue depths, and the epoch of each
    Redis we depend on (the broker's, when it is Redis, and REDIS_URL's)."""

    def __init__(self, celery_app: Any, settings: Settings) -> None:
        self.app, self.settings = celery_app, settings

    def queue_of(self, kind: str) -> str:
        """The queue the kind's run task (and, by the same routes, its steps) goes to."""
        return str(self.app.amqp.router.route({}, RUN_TASKS[RunKind(kind)])["queue"].name)

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
        """One per Redis database: the broker's and REDIS_URL's, once if they are the same
        (however their URLs are spelled)."""
        key = f"{self.settings.redis_key_prefix}:epoch"
        named = {"broker": self.settings.broker_url, "state": self.settings.redis_url}
        state = _redis_database(self.settings.redis_url)
        seen: dict[tuple[str, int, int], RedisEpoch] = {}
        for name, url in named.items():
            where = _redis_database(url)
            if where is not None and where not in seen:
                seen[where] = RedisEpoch(name, redis_for(url), key, holds_state=where == state)
        return list(seen.values())


class CeleryDispatch:
    """How the reconciler sends work again: an enrichment item from its checkpoint step (or
    just its missing steps, to heal it), a run through its run task."""

    def resume(self, item: progress.OpenItem, generation: int) -> None:
        assert item.step and item.checkpoint
        resume_chain(item.step, {**item.checkpoint, "generation": generation})

    def heal_steps(self, steps: list[str], ctx: dict[str, Any]) -> None:
        heal_chain(steps, ctx)

    def resend_run(self, kind: str, run_id: uuid.UUID) -> None:
        send_run(kind, run_id, uuid.uuid4().hex, fail_if_unsent=False)


def vendor_back(tenant_id: int, vendor: str) -> bool:
    """Whether `vendor` answers `tenant_id` now: one probe (`VendorClient.probe`) through the
    tenant's breaker — a call like any other while it is closed, its half-open call once an
    open breaker's cool-off is over (success closes it). Healing asks this before redoing
    anything, so deferred work is not spent against a vendor that is still down."""
    try:
        vendor_guard().call(tenant_id, vendor, lambda: registry.probe(vendor, tenant_id))
    except PipelineError as exc:  # still down, cooling off, or no credential to ask with
        log.info("healing.vendor_not_back", tenant_id=tenant_id, vendor=vendor, why=exc.code)
        return False
    except Exception as exc:  # anything else: not known to be back
        log.warning("healing.probe_failed", vendor=vendor, error=type(exc).__name__)
        return False
    log.info("healing.vendor_back", tenant_id=tenant_id, vendor=vendor)
    return True


def reconciler(settings: Settings | None = None) -> Reconciler:
    settings = settings or get_settings()
    dispatch = CeleryDispatch()
    healer = Healer(settings, dispatch, vendor_back=vendor_back, vendors=GUARDED_VENDORS)
    return Reconciler(settings, CeleryBroker(app, settings), dispatch, healer=healer)


@app.task(name="tasks.maintenance.reconcile", ignore_result=True, acks_late=True)
def reconcile() -> dict[str, Any]:
    """One reconciler pass (see `pipeline.reconciler`). With the database away there is
    nothing to reconcile against: the pass is skipped (logged, not dead-lettered) and the
    next one, an interval later, tries again."""
    try:
        report: ReconcileReport = reconciler().run()
    except DATABASE_ERRORS as exc:
        log.warning("reconciler.skipped", why="database unreachable", error=type(exc).__name__)
        return {"skipped": True}
    return report.as_dict()


@app.task(name="tasks.maintenance.sweep_pipelines", ignore_result=True, acks_late=True)
def sweep_pipelines() -> int:
    """Start next stages and re-send stage runs that a crash or a down broker left behind
    (also part of every reconciler pass; kept for messages an older beat still sends)."""
    return sweep()


def _redis_database(url: str) -> tuple[str, int, int] | None:
    """(host, port, db) of a redis:// URL; None for any other broker."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    db = parts.path.strip("/") or "0"
    return (parts.hostname or "localhost", parts.port or 6379, int(db) if db.isdigit() else 0)
