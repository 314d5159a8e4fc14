"""Throw-away services for tests and benchmarks: a migrated Postgres database, a flushed
Redis database, the vendor simulator in a process of its own, and settings that follow."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import redis

from tests.support.processes import REPO

PG_ADMIN_DSN = "dbname=postgres user=postgres host=127.0.0.1 port=5432"
# Tests own two Redis dbs: this one and the next. A second checkout testing on this machine
# at the same time sets PIPELINE_TEST_REDIS_DB to another pair.
TEST_REDIS_DB = int(os.environ.get("PIPELINE_TEST_REDIS_DB", "12"))


def own_redis_url(offset: int = 0) -> str:
    """The tests' Redis db (offset 0) or their second one (offset 1, a separate broker)."""
    return f"redis://127.0.0.1:6379/{TEST_REDIS_DB + offset}"


def _pg_admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def throwaway_database(prefix: str = "pipeline_test", *, migrate: bool = True) -> Iterator[str]:
    """A new Postgres database, migrated by Alembic (unless told not to); dropped
    afterwards, whatever happens."""
    from pipeline.db.engine import dispose_engines
    from pipeline.db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _pg_admin(f"CREATE DATABASE {name}")
    try:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        if migrate:
            upgrade(url)
        yield url
    finally:
        dispose_engines()
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def flushed_redis(url: str) -> Iterator[redis.Redis]:
    """A Redis database emptied before and after (a loud failure if Redis is down)."""
    client = redis.Redis.from_url(url)
    client.ping()
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()


@contextmanager
def environment(env: dict[str, str]) -> Iterator[Any]:
    """Point this process at `env` (settings, breakers, guard, Celery app); restore after."""
    from pipeline.embedded import reload_settings

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield reload_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reload_settings()


class SimulatorProcess:
    """The vendor simulator in a process of its own (`pipeline.simulator.serve`), driven
    through `SimulatorAdmin`: its request threads do not share a GIL with the caller."""

    def __init__(self, seed: int) -> None:
        from pipeline.simulator import SimulatorAdmin

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from pipeline.simulator import serve; serve(port=0, seed={seed})",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "vendor simulator listening on URL (seed S)"
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.admin = SimulatorAdmin(self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def simulator_process(seed: int) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(seed)
    try:
        yield sim
    finally:
        sim.admin.close()
        sim.stop()
