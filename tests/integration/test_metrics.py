"""Metrics from a real prefork worker in multiprocess mode, scraped two ways.

A worker of its own (its own broker db, `PROMETHEUS_MULTIPROC_DIR` in a tmp dir,
`WORKER_METRICS_PORT`) runs enrichment jobs against the simulator for a healthy tenant and
one whose crawler answers 503. Its pool processes count; then `render()` (reading the same
directory, from this process) and the worker's own HTTP port both show the vendor call
latency the pool processes observed, retries by vendor and code, the failing tenant's
breaker open (read from Redis), the transition that opened it, and runs by kind and outcome
with their reason codes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from pipeline import runs
from pipeline.companies import CompanyRef, upsert_companies
from pipeline.db.models import RunKind
from pipeline.enqueue import EnrichmentOptions
from pipeline.metrics.exposition import render
from pipeline.settings import load_settings
from pipeline.simulator import Simulator
from tests.support.processes import Worker, free_port, wait_until
from tests.support.runs import finished
from tests.support.stack import environment, own_redis_url
from workers.app import create_app

METRICS_BROKER = own_redis_url(1)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsWorker:
    def __init__(self, worker: Worker, app: Any, directory: Path, port: int) -> None:
        self.worker, self.app, self.directory, self.port = worker, app, directory, port

    def scrape(self) -> str:
        response = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text


@pytest.fixture
def metrics_worker(integration_env: dict[str, str], tmp_path: Path) -> Iterator[MetricsWorker]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "counter_4242424.db"
    stale.write_bytes(b"left by an earlier run")
    port = free_port()
    env = {
        **integration_env,
        "BROKER_URL": METRICS_BROKER,
        "RESULT_BACKEND": METRICS_BROKER,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "WORKER_METRICS_PORT": str(port),
        "WORKER_METRICS_ADDRESS": "127.0.0.1",
    }
    app = create_app(load_settings(broker_url=METRICS_BROKER, result_backend=METRICS_BROKER))
    worker = Worker(env, tmp_path / "metrics-worker.log", concurrency=2, name="metrics")
    try:
        worker.wait_ready(app)
        assert not stale.exists(), "the worker empties the directory as it starts"
        with environment({"PROMETHEUS_MULTIPROC_DIR": str(directory)}):  # for render()
            yield MetricsWorker(worker, app, directory, port)
    finally:
        worker.stop()
        redis.Redis.from_url(METRICS_BROKER).flushdb()


def send_enrichment(app: Any, tenant: int, count: int) -> uuid.UUID:
    """What `enqueue_enrichment` records, sent through this test's own broker."""
    refs = [CompanyRef(None, f"Company {n}", f"company-{n}-{tenant}.com") for n in range(count)]
    keys = [f"company:{company_id}" for company_id in upsert_companies(tenant, refs)]
    options = {**EnrichmentOptions.resolve(None).model_dump(), "then": []}
    run_id = runs.create_run(tenant, RunKind.ENRICHMENT, keys, options=options)
    app.send_task("tasks.enrichment.start_run", args=[str(run_id)])
    return run_id


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(found: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, have), v in found.items() if n == name and wanted <= have)


def simulated_calls(simulator: Simulator, vendor: str, *tenants: int) -> int:
    per_tenant = simulator.stats()["calls"].get(vendor, {})
    return sum(int(per_tenant.get(str(t), 0)) for t in tenants)


def test_pool_processes_metrics_are_scraped_through_render_and_the_worker_port(
    metrics_worker: MetricsWorker, simulator: Simulator, tenant: int
) -> None:
    healthy, failing = tenant, tenant + 1
    simulator.set_fault(vendor="crawler", tenant=failing, status=503)
    try:
        good = finished(send_enrichment(metrics_worker.app, healthy, 2))
        bad = finished(send_enrichment(metrics_worker.app, failing, 4))
    finally:
        simulator.set_fault(vendor="crawler", tenant=failing)
    assert (good.run.status, bad.run.status) == ("succeeded", "degraded")
    reason_codes = Counter(
        reason.split(":")[0] for item in bad.items for reason in item.degraded_reasons.split(",")
    )
    assert reason_codes["CIRCUIT_OPEN"] >= 1, "the breaker opened during the run"

    def settled(text: str) -> Samples | None:
        found = samples(text)
        closed = total(found, "pipeline_runs_total", kind="enrichment")
        return found if closed == 2 else None  # counted after each close is committed

    def rendered() -> str:
        return render()[0].decode()

    for how, scrape in (("render()", rendered), ("port", metrics_worker.scrape)):
        found = wait_until(lambda scrape=scrape: settled(scrape()), what=f"runs counted ({how})")

        crawler_calls = simulated_calls(simulator, "crawler", healthy, failing)
        observed = value(found, "pipeline_vendor_call_duration_seconds_count", vendor="crawler")
        assert observed == crawler_calls, f"{how}: every call that reached the crawler"
        seconds = value(found, "pipeline_vendor_call_duration_seconds_sum", vendor="crawler")
        assert seconds is not None and seconds > 0
        failed = value(
            found, "pipeline_vendor_calls_total", vendor="crawler", outcome="SERVER_ERROR"
        )
        assert failed == simulated_calls(simulator, "crawler", failing), how

        retries = value(found, "pipeline_retries_total", vendor="crawler", code="SERVER_ERROR")
        assert retries is not None and retries >= 1, how

        assert value(found, "pipeline_breaker_state", tenant=str(failing), vendor="crawler") == 2
        assert value(found, "pipeline_breaker_state", tenant=str(healthy), vendor="crawler") is None
        opened = {"tenant": str(failing), "vendor": "crawler", "from_state": "closed"}
        assert value(found, "pipeline_breaker_transitions_total", **opened, to_state="open") == 1

        assert value(found, "pipeline_runs_total", kind="enrichment", outcome="succeeded") == 1
        assert value(found, "pipeline_runs_total", kind="enrichment", outcome="degraded") == 1
        for code, count in reason_codes.items():
            counted = value(found, "pipeline_degraded_reasons_total", kind="enrichment", code=code)
            assert counted == count, (how, code)

    text = render()[0].decode() + metrics_worker.scrape()
    for run in (good, bad):
        assert str(run.run.id) not in text, "no run id in any label"


def test_latency_is_observed_in_the_pool_processes_files(
    metrics_worker: MetricsWorker, tenant: int
) -> None:
    """Each pool process writes its own files; the main process observes no vendor call."""
    finished(send_enrichment(metrics_worker.app, tenant, 2))
    children = {str(pid) for pid in metrics_worker.worker.children()}
    writers = wait_until(
        lambda: {p.stem.rsplit("_", 1)[1] for p in metrics_worker.directory.glob("histogram_*.db")},
        what="histogram files",
    )
    assert writers <= children, f"histograms written by {writers}, pool is {children}"
    assert str(metrics_worker.worker.proc.pid) not in writers
