"""`pipeline flower`: a real Flower on loopback, against the test broker and worker.

Flower is started before any task of the test runs (it learns tasks from the workers'
events as they happen); through its HTTP API, with basic auth, it shows the worker and a
finished CRM sync — whose arguments, result and every other field hold no secret of the
tenant's stored credential. Without credentials (or with wrong ones) it answers 401; without
a password the command refuses to start at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline import enqueue_crm_sync, enqueue_enrichment
from pipeline.credentials import put_credential
from pipeline.simulator import Simulator
from tests.support.processes import REPO, Worker, free_port, wait_until
from tests.support.runs import company, finished

USER, PASSWORD = "ops", f"flower-{uuid.uuid4().hex}"


class Flower:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.url, self.proc, self.log_path = f"http://127.0.0.1:{port}", proc, log_path

    def get(self, path: str, *, auth: Any = (USER, PASSWORD), **params: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=auth, params=params, timeout=10)

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        response.raise_for_status()
        return response.json()


def answers(flower: Flower) -> bool:
    if flower.proc.poll() is not None:
        raise RuntimeError(f"flower exited:\n{flower.log_path.read_text()[-3000:]}")
    try:
        return flower.get("/healthcheck").status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def flower(integration_env: dict[str, str], worker: Worker, tmp_path: Path) -> Iterator[Flower]:
    port = free_port()
    log_path = tmp_path / "flower.log"
    env = {**os.environ, "FLOWER_USER": USER, "FLOWER_PASSWORD": PASSWORD, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "flower", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Flower(port, proc, log_path)
    try:
        wait_until(lambda: answers(running), timeout=30, what="flower to answer")
        yield running
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_flower_shows_the_worker_and_a_finished_sync_with_no_secret_in_it(
    flower: Flower, worker: Worker, simulator: Simulator, tenant: int
) -> None:
    for path in ("/api/workers", "/api/tasks", "/workers"):
        assert flower.get(path, auth=None).status_code == 401, path
        assert flower.get(path, auth=(USER, "wrong")).status_code == 401, path

    # The worker through the control API, and through the events Flower listens to (its
    # heartbeats): once those arrive, Flower sees every task event that follows.
    assert worker.name in wait_until(
        lambda: flower.json("/api/workers", refresh=1), what="flower to list the worker"
    )
    wait_until(
        lambda: any(
            w["hostname"] == worker.name and w["status"]
            for w in flower.json("/workers", json=1)["data"]
        ),
        what="flower to receive the worker's events",
    )

    secret = f"crm-secret-{uuid.uuid4().hex}"
    simulator.register_crm_client(tenant, f"client-{tenant}", secret)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": secret})
    source = finished(enqueue_enrichment(tenant, [company(n, tenant) for n in range(2)]))
    sync_id = enqueue_crm_sync(tenant, run_id=source.run.id)
    assert finished(sync_id).run.status == "succeeded"

    def sync_task() -> tuple[str, dict[str, Any]] | None:
        listed = flower.json("/api/tasks", taskname="tasks.crm_sync.sync_run", state="SUCCESS")
        return next(
            ((task_id, task) for task_id, task in listed.items() if str(sync_id) in task["args"]),
            None,
        )

    task_id, listed = wait_until(sync_task, what="flower to show the finished sync")
    info = flower.json(f"/api/task/info/{task_id}")
    assert info["state"] == "SUCCESS" and info["worker"] == worker.name
    assert info["args"] == listed["args"] == repr([str(sync_id)])
    assert info["kwargs"] == "{}"

    shown = " ".join(
        flower.get(path, **params).text
        for path, params in (
            ("/api/tasks", {}),
            ("/api/tasks", {"taskname": "tasks.crm_sync.sync_run"}),
            (f"/api/task/info/{task_id}", {}),
        )
    )
    assert str(sync_id) in shown
    for value in (secret, os.environ["PIPELINE_SECRET_KEY"]):
        assert value not in shown, "a secret in what Flower shows"


@pytest.mark.parametrize(
    "path",
    ["/metrics", "/healthcheck", "/static/css/flower.css", "/login", "/nowhere", "/api/workers"],
)
def test_every_path_needs_the_credentials(flower: Flower, path: str) -> None:
    """Flower itself leaves /metrics (every worker and task name), /healthcheck, its static
    files, its login and 404 pages open; `pipeline flower` closes them too."""
    for auth in (None, (USER, "wrong"), ("someone", PASSWORD)):
        refused = flower.get(path, auth=auth)
        assert refused.status_code == 401, (path, auth)
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="flower"'
        assert "flower_" not in refused.text and "worker" not in refused.text.lower()
    post = requests.post(f"{flower.url}{path}", timeout=10)
    assert post.status_code == 401


def test_the_monitoring_paths_answer_with_the_credentials(flower: Flower) -> None:
    assert flower.get("/healthcheck").text == "OK"
    assert "flower_events_total" in flower.get("/metrics").text


def test_flower_refuses_to_start_without_a_password(integration_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() != "FLOWER_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "flower", "--port", str(free_port())],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FLOWER_PASSWORD is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_flower_reads_the_queue_lengths_from_the_redis_broker(flower: Flower) -> None:
    """Flower picks its broker client by the URL scheme Celery's connection reports: the
    worker's poison-proof transport must not hide that the broker is Redis."""
    queues = flower.json("/api/queues/length")["active_queues"]
    assert {queue["name"] for queue in queues} >= {"critical", "default", "export"}
    assert all(isinstance(queue["messages"], int) for queue in queues)
