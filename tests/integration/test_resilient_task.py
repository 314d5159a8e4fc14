"""`ResilientTask` in a real prefork worker: policy countdowns, final errors, attempts, logs."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import select

from pipeline import runs
from pipeline.breakers import breaker_for
from pipeline.db.engine import session_scope
from pipeline.db.models import RunKind, VendorCall
from pipeline.errors import VendorServerError
from pipeline.resilience.retry import RetryPolicy
from pipeline.settings import get_settings, load_settings
from tests.support.processes import PrivateRedis, Worker, wait_until
from tests.support.stack import own_redis_url
from tests.support.vendor_stub import VendorStub
from workers.app import create_app

pytestmark = pytest.mark.usefixtures("worker")


def new_item(tenant: int) -> int:
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, ["company-1"])
    return runs.item_ids(run_id)["company-1"]


def item_row(item_id: int) -> Any:
    with session_scope() as session:
        from pipeline.db.models import RunItem

        return session.get_one(RunItem, item_id)


def log_events(worker: Worker, event: str, task_id: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event and entry.get("task_id") == task_id:
            found.append(entry)
    return found


def fetch(app: Any, url: str, tenant: int, item_id: int, **options: Any) -> Any:
    return app.send_task(
        "tests.fetch_vendor",
        args=[url],
        kwargs={"tenant_id": tenant, "vendor": "crawler", "item_id": item_id},
        **options,
    )


def test_two_503s_then_200_is_retried_with_the_policys_countdowns(
    celery_app: Any, worker: Worker, stub: VendorStub, tenant: int
) -> None:
    url = stub.script(f"flaky-{tenant}", [503, 503, 200])
    item_id = new_item(tenant)
    correlation_id = f"corr-{uuid.uuid4().hex}"

    result = fetch(celery_app, url, tenant, item_id, headers={"x_correlation_id": correlation_id})
    assert result.get(timeout=30)["status"] == 200

    policy = RetryPolicy.from_settings(get_settings())
    expected = [policy.delay_for(n, VendorServerError("503"), key=result.id) for n in (1, 2)]
    retries = wait_until(lambda: log_events(worker, "task.retry", result.id), what="retry logs")
    assert [r["countdown_ms"] for r in retries] == [round(d * 1000) for d in expected]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert {r["correlation_id"] for r in retries} == {correlation_id}, "id survives retries"
    assert {r["tenant_id"] for r in retries} == {tenant}

    # Celery got our exact ETA (ms precision), not a countdown rounded to whole seconds.
    attempts = log_events(worker, "test.attempt", result.id)
    assert [a["eta"] for a in attempts[1:]] == [r["eta"] for r in retries]

    hits = stub.hits(f"flaky-{tenant}")
    assert len(hits) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(hits)]
    for gap, countdown in zip(gaps, expected, strict=True):
        assert gap >= countdown - 0.01, "a retry must not run before its countdown"

    item = item_row(item_id)
    assert item.attempts == 3
    assert item.last_error_code == "SERVER_ERROR"
    with session_scope() as session:
        calls = session.scalars(select(VendorCall).where(VendorCall.tenant_id == tenant)).all()
        assert sorted(c.error_code or "ok" for c in calls) == ["SERVER_ERROR", "SERVER_ERROR", "ok"]


def test_a_400_is_not_retried(celery_app: Any, stub: VendorStub, tenant: int) -> None:
    url = stub.script(f"bad-{tenant}", [400, 200])
    item_id = new_item(tenant)

    result = fetch(celery_app, url, tenant, item_id)
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "VendorClientError"
    assert len(stub.hits(f"bad-{tenant}")) == 1
    # on_failure runs after Celery stores the result: poll for the item's record
    item = wait_until(lambda: (i := item_row(item_id)).last_error_code and i, what="item error")
    assert (item.attempts, item.last_error_code) == (1, "CLIENT_ERROR")


def test_retries_end_with_retries_exhausted(celery_app: Any, stub: VendorStub, tenant: int) -> None:
    url = stub.script(f"down-{tenant}", [503] * 10)
    item_id = new_item(tenant)

    result = fetch(celery_app, url, tenant, item_id)
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "RetriesExhaustedError"
    assert len(stub.hits(f"down-{tenant}")) == get_settings().retry_max_attempts
    item = wait_until(
        lambda: (i := item_row(item_id)).last_error_code == "RETRIES_EXHAUSTED" and i,
        what="item error",
    )
    assert item.attempts == 3


def test_redis_outage_does_not_crash_a_task(
    integration_env: dict[str, str], stub: VendorStub, tenant: int, tmp_path: Any
) -> None:
    """A second worker keeps breaker state in a Redis of its own, which we then kill."""
    breaker_redis = PrivateRedis()
    broker = own_redis_url(1)
    env = {
        **integration_env,
        "BROKER_URL": broker,
        "RESULT_BACKEND": broker,
        "REDIS_URL": breaker_redis.url,
    }
    app = create_app(load_settings(broker_url=broker, result_backend=broker))
    outage_worker = Worker(env, tmp_path / "worker.log", concurrency=1, name="outage")
    try:
        outage_worker.wait_ready(app)
        breaker_redis.stop()
        url = stub.script(f"outage-{tenant}", [503, 200])

        result = fetch(app, url, tenant, new_item(tenant))
        assert result.get(timeout=30)["status"] == 200
        assert '"breaker.redis_unavailable"' in outage_worker.log_text()
    finally:
        outage_worker.stop()
        breaker_redis.stop()
        redis.Redis.from_url(broker).flushdb()


def call_once(app: Any, url: str, tenant: int, **kwargs: Any) -> Any:
    return app.send_task(
        "tests.call_once", args=[url], kwargs={"tenant_id": tenant, "vendor": "crm", **kwargs}
    )


def test_failures_from_two_worker_processes_open_the_breaker(
    celery_app: Any, stub: VendorStub, tenant: int
) -> None:
    url = stub.script(f"crm-{tenant}", [503] * 10)
    rendezvous = f"{get_settings().redis_key_prefix}:rv:{tenant}"
    pair = [call_once(celery_app, url, tenant, rendezvous=rendezvous, together=2) for _ in "ab"]
    first = [r.get(timeout=30) for r in pair]
    assert len({r["pid"] for r in first}) == 2, "two worker processes"
    assert breaker_for(tenant, "crm").current_state == "closed"

    third = call_once(celery_app, url, tenant).get(timeout=30)
    assert third["error_code"] == "SERVER_ERROR"
    assert breaker_for(tenant, "crm").current_state == "open"

    refused = call_once(celery_app, url, tenant).get(timeout=30)
    assert refused["error_code"] == "CIRCUIT_OPEN"
    assert len(stub.hits(f"crm-{tenant}")) == 3, "an open breaker calls nobody"


@pytest.mark.parametrize(
    ("answer", "code"),
    [((429, {"Retry-After": "1"}), "RATE_LIMITED"), (400, "CLIENT_ERROR"), (401, "AUTH_FAILED")],
)
def test_real_429_and_4xx_answers_never_open_the_breaker(
    celery_app: Any, stub: VendorStub, tenant: int, answer: Any, code: str
) -> None:
    url = stub.script(f"neutral-{tenant}", [answer] * 6)
    results = [call_once(celery_app, url, tenant).get(timeout=30) for _ in range(6)]
    codes = [r["error_code"] for r in results]
    if code == "RATE_LIMITED":  # after a 429 pacing holds calls back: no request is made
        assert codes[0] == code and set(codes) <= {code, "PACED"}
        assert len(stub.hits(f"neutral-{tenant}")) == codes.count(code)
    else:
        assert codes == [code] * 6
    assert breaker_for(tenant, "crm").current_state == "closed"
    assert breaker_for(tenant, "crm").fail_counter == 0


def test_retry_after_is_waited_out(
    celery_app: Any, worker: Worker, stub: VendorStub, tenant: int
) -> None:
    url = stub.script(f"slow-down-{tenant}", [(429, {"Retry-After": "1"}), 200])
    result = fetch(celery_app, url, tenant, new_item(tenant))
    assert result.get(timeout=30)["status"] == 200
    (retry,) = log_events(worker, "task.retry", result.id)
    assert retry["countdown_ms"] >= 1000
    first, second = stub.hits(f"slow-down-{tenant}")
    assert second - first >= 1.0


def test_a_rate_limit_pause_spends_no_attempt(celery_app: Any, worker: Worker) -> None:
    """Held back five times — more than RETRY_MAX_ATTEMPTS — by a limit that asks for
    50 ms: each time it comes back after that plus a little jitter, and succeeds."""
    counter = f"held-back:{uuid.uuid4().hex}"
    result = celery_app.send_task(
        "tests.held_back", args=[counter], kwargs={"times": 5, "wait_s": 0.05}
    )
    assert result.get(timeout=30) == 6
    retries = log_events(worker, "task.retry", result.id)
    assert len(retries) == 5 and all(r["attempt"] is None for r in retries), retries
    assert all(50 <= r["countdown_ms"] <= 250 for r in retries), retries
