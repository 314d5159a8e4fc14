"""The production Celery app plus small tasks that exercise `ResilientTask` against the stub.

Started by the tests as `celery -A tests.integration.celery_app worker`.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from pipeline.errors import raise_for_vendor
from pipeline.settings import get_settings
from workers.app import app
from workers.resilient_task import ResilientTask

__all__ = ["app"]


@app.task(base=ResilientTask, bind=True, name="tests.fetch_vendor")
def fetch_vendor(
    self: ResilientTask, url: str, *, tenant_id: int, vendor: str, item_id: int | None = None
) -> dict[str, Any]:
    settings = get_settings()
    timeout = (settings.http_connect_timeout_s, settings.http_read_timeout_s)
    response = self.call_vendor(
        tenant_id, vendor, lambda: raise_for_vendor(requests.get(url, timeout=timeout), vendor)
    )
    return {"status": response.status_code, "pid": os.getpid()}
