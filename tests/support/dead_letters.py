"""Dead letters as tests wait for them, and a task sent to make one."""

from __future__ import annotations

from typing import Any

from pipeline import dead_letters
from pipeline.db.models import DeadLetter
from tests.support.processes import wait_until


def entry_for(task_id: str, *, failures: int = 1) -> DeadLetter:
    def look() -> DeadLetter | None:
        for entry in dead_letters.list_entries(limit=500):
            if entry.task_id == task_id and entry.failures >= failures:
                return entry
        return None

    return wait_until(look, timeout=30, interval=0.1, what=f"dead letter of {task_id}")


def fetch(app: Any, url: str, tenant: int) -> Any:
    return app.send_task(
        "tests.fetch_vendor", args=[url], kwargs={"tenant_id": tenant, "vendor": "crawler"}
    )
