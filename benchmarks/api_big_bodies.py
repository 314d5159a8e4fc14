"""How `GET /health` answers while large bodies are posted to `POST /runs`.

A body is parsed and validated by the API process; if that happened on the event loop,
every other request of the process would wait behind it. This script starts a real
`pipeline api` (uvicorn, loopback) against a throw-away Postgres database and the test Redis
db, posts bodies of `--body-mb` MB (10,000 long-named companies with an unknown stage, so
each is read and validated in full, then refused with 422 and nothing is written) from
`--posters` threads for `--seconds`, and meanwhile asks `GET /health` every 20 ms on a
connection of its own. It prints the latency percentiles of `/health` with and without the
load, and how the posts were answered (422 parsed, 413 refused by `API_MAX_BODY_BYTES`).

    PIPELINE_TEST_REDIS_DB=6 .venv/bin/python benchmarks/api_big_bodies.py \
        [--body-mb 3] [--posters 2] [--seconds 10] [--max-body-bytes 4194304]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import REPO, free_port, wait_until
from tests.support.stack import (
    environment,
    flushed_redis,
    own_redis_url,
    throwaway_database,
)


def big_body(megabytes: float) -> bytes:
    name_length = 250
    count = min(10_000, int(megabytes * 1_000_000 / (name_length + 40)))
    companies = [
        {"name": f"{n:06d}" + "x" * (name_length - 6), "domain": f"c{n}.example.com"}
        for n in range(count)
    ]
    return json.dumps({"kind": "enrichment", "companies": companies, "then": ["nope"]}).encode()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = statistics.quantiles(ordered, n=100, method="inclusive")
    return (
        f"n={len(ordered)} p50={p[49] * 1000:.1f}ms p90={p[89] * 1000:.1f}ms "
        f"p99={p[98] * 1000:.1f}ms max={ordered[-1] * 1000:.1f}ms"
    )


def sample_health(url: str, stop: threading.Event) -> list[float]:
    session = requests.Session()
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        session.get(f"{url}/health", timeout=30).raise_for_status()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    return latencies


def post_bodies(
    url: str, key: str, body: bytes, stop: threading.Event, statuses: collections.Counter[int]
) -> None:
    session = requests.Session()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    while not stop.is_set():
        statuses[
            session.post(f"{url}/runs", data=body, headers=headers, timeout=60).status_code
        ] += 1


def measure(url: str, seconds: float, load: threading.Thread | None = None) -> list[float]:
    stop = threading.Event()
    result: list[float] = []
    sampler = threading.Thread(target=lambda: result.extend(sample_health(url, stop)))
    sampler.start()
    time.sleep(seconds)
    stop.set()
    sampler.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-mb", type=float, default=3.0)
    parser.add_argument("--posters", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-body-bytes", type=int, help="API_MAX_BODY_BYTES for the server")
    args = parser.parse_args()

    redis_url = own_redis_url()
    with flushed_redis(redis_url), throwaway_database("pipeline_bench") as database_url:
        env = {
            "DATABASE_URL": database_url,
            "BROKER_URL": redis_url,
            "RESULT_BACKEND": redis_url,
            "REDIS_URL": redis_url,
            "PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
            "LOG_JSON": "true",
            "LOG_LEVEL": "WARNING",
        }
        if args.max_body_bytes is not None:
            env["API_MAX_BODY_BYTES"] = str(args.max_body_bytes)
        with environment(env):
            from pipeline.api_keys import create_api_key

            key, _ = create_api_key(tenant_id=7, name="bench")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "api", "--port", str(port)],
                cwd=REPO,
                env=dict(os.environ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(lambda: _answers(url), timeout=30, what="pipeline api")
                body = big_body(args.body_mb)
                print(f"body: {len(body) / 1e6:.2f} MB, posters: {args.posters}")
                idle = measure(url, min(args.seconds, 5))
                print(f"/health idle:        {percentiles(idle)}")
                stop = threading.Event()
                statuses: collections.Counter[int] = collections.Counter()
                posters = [
                    threading.Thread(target=post_bodies, args=(url, key, body, stop, statuses))
                    for _ in range(args.posters)
                ]
                for poster in posters:
                    poster.start()
                loaded = measure(url, args.seconds)
                stop.set()
                for poster in posters:
                    poster.join()
                print(f"/health under posts: {percentiles(loaded)}")
                print(f"posts answered: {dict(statuses)}")
                p99 = (
                    statistics.quantiles(loaded, n=100)[98] / statistics.quantiles(idle, n=100)[98]
                )
                print(f"ratio /health p99 under posts / idle: {p99:.2f}")
            finally:
                server.terminate()
                server.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=1).ok
    except requests.ConnectionError:
        return False


if __name__ == "__main__":
    main()
