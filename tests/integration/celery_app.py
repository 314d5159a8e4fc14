"""The production Celery app plus small tasks that exercise `ResilientTask` against the stub.

Started by the tests as `celery -A tests.integration.celery_app worker`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
import requests
import structlog
from celery.exceptions import Reject, SoftTimeLimitExceeded

from pipeline.errors import (
    TenantRateExceededError,
    VendorClientError,
    VendorError,
    raise_for_vendor,
)
from pipeline.settings import get_settings
from tests.support.processes import wait_until
from workers.app import app
from workers.resilient_task import ResilientTask

__all__ = ["app"]
log = structlog.get_logger(__name__)


def _get(url: str, vendor: str) -> requests.Response:
    settings = get_settings()
    timeout = (settings.http_connect_timeout_s, settings.http_read_timeout_s)
    return raise_for_vendor(requests.get(url, timeout=timeout), vendor)


@app.task(base=ResilientTask, bind=True, name="tests.fetch_vendor")
def fetch_vendor(
    self: ResilientTask, url: str, *, tenant_id: int, vendor: str, item_id: int | None = None
) -> dict[str, Any]:
    log.info("test.attempt", eta=self.request.eta, retries=self.request.retries)
    response = self.call_vendor(tenant_id, vendor, lambda: _get(url, vendor))
    return {"status": response.status_code, "pid": os.getpid()}


@app.task(base=ResilientTask, bind=True, name="tests.call_once", autoretry_for=())
def call_once(
    self: ResilientTask,
    url: str,
    *,
    tenant_id: int,
    vendor: str,
    rendezvous: str = "",
    together: int = 1,
) -> dict[str, Any]:
    """One vendor call, no retry; with `rendezvous`, first wait until `together` tasks are
    running at once (so they run in different worker processes)."""
    if rendezvous:
        client = redis.Redis.from_url(get_settings().redis_url)
        client.incr(rendezvous)
        wait_until(lambda: int(client.get(rendezvous) or 0) >= together, what="rendezvous")
    try:
        self.call_vendor(tenant_id, vendor, lambda: _get(url, vendor))
    except VendorError as exc:
        return {"pid": os.getpid(), "error_code": exc.code}
    return {"pid": os.getpid(), "error_code": None}


@app.task(base=ResilientTask, bind=True, name="tests.hang", soft_time_limit=1, time_limit=2)
def hang(self: ResilientTask, *, tenant_id: int) -> None:
    """Stands for a call that never answers and ignores the soft time limit: the hard
    limit kills its process. (A soft limit above the hard one would hold the hard one off:
    Celery arms the hard timer only once the soft one fires.)"""
    stuck = threading.Event()
    while True:
        try:
            stuck.wait()
        except SoftTimeLimitExceeded:
            continue


@app.task(base=ResilientTask, bind=True, name="tests.kill_own_process")
def kill_own_process(self: ResilientTask, *, tenant_id: int) -> None:
    """A poison message: whichever worker process runs it dies (as with a segfault)."""
    os.kill(os.getpid(), 9)


@app.task(base=ResilientTask, bind=True, name="tests.reject")
def reject(self: ResilientTask, *, tenant_id: int) -> None:
    """Refuses its message for good, as a task that finds it can never succeed would."""
    raise Reject(VendorClientError("nothing to do with this", vendor="crawler"), requeue=False)


@app.task(base=ResilientTask, bind=True, name="tests.held_back")
def held_back(self: ResilientTask, counter: str, *, times: int, wait_s: float) -> int:
    """Held back `times` times by a rate limit (as pacing or a 429 would), then done."""
    client = redis.Redis.from_url(get_settings().redis_url)
    seen = int(client.incr(counter))
    if seen <= times:
        raise TenantRateExceededError("slow down", vendor="crm", retry_after_s=wait_s)
    return seen
