"""Is everything the pipeline needs up? Redis, Postgres, the broker, live workers, vendors.

The answer is cached for `HEALTH_CACHE_S` (on an injectable clock), so monitoring can poll
it freely: one check at a time runs the probes, everyone else gets its answer. The probes
run side by side, each given `HEALTH_PROBE_TIMEOUT_S`: a probe that has not answered by then
counts as down, so a hung Redis or a black-holed database host cannot hang the caller.

Live workers are found with Celery's `control.ping` (a broadcast every worker's main process
answers, even with its pool busy), and a worker counts as live for `HEALTH_WORKER_SEEN_S`
after its last answer — so one reply that missed the short ping window does not flap the
answer. Worker heartbeats would need an event consumer running all the time in this process,
reading every task event of every tenant; a ping costs one broadcast per check, only when
someone asks.

A vendor's health comes from its breakers across tenants (`VendorBreakers.healthy`); it is
`None` — unknown — while breaker state cannot be read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

import sqlalchemy

from pipeline.settings import Settings, get_settings

ProbeResult = tuple[bool, dict[str, Any]]


class DependencyHealth:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        celery_app: Any = None,
        settings: Settings | None = None,
    ) -> None:
        self.clock = clock
        self._celery_app = celery_app
        self._settings = settings
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._workers_seen: dict[str, float] = {}
        # Bounded: probes stuck past their timeout hold a thread each, never more than this.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-probe")

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def report(self) -> dict[str, Any]:
        """The spec's booleans (`redis`, `postgres`, `broker`, `workers`, `vendors`) and a
        `details` object saying why; at most `HEALTH_CACHE_S` old."""
        with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.settings.health_cache_s:
                return self._cached[1]
            report = self._check(now)
            self._cached = (now, report)
            return report

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the probes --------------------------------------------------------------------------

    def _check(self, now: float) -> dict[str, Any]:
        timeout = self.settings.health_probe_timeout_s
        probes: dict[str, Callable[[], ProbeResult]] = {
            "redis": self._redis,
            "postgres": self._postgres,
            "broker": self._broker,
            "workers": lambda: self._workers(now),
            "vendors": self._vendors,
        }
        futures = {name: self._pool.submit(_timed, probe) for name, probe in probes.items()}
        wait(futures.values(), timeout=timeout)
        results = {name: _outcome(future, timeout) for name, future in futures.items()}
        ok = {name: results[name][0] for name in ("redis", "postgres", "broker", "workers")}
        vendor_detail = results["vendors"][1]
        vendors = vendor_detail.pop("healthy", None) or dict.fromkeys(self._vendor_names())
        return {
            **ok,
            "vendors": vendors,
            "details": {
                **{name: detail for name, (_, detail) in results.items()},
                "checked_at": datetime.now(UTC).isoformat(),
                "cached_for_s": self.settings.health_cache_s,
            },
        }

    def _redis(self) -> ProbeResult:
        from pipeline.redis_client import redis_for

        return bool(redis_for(self.settings.redis_url).ping()), {}

    def _postgres(self) -> ProbeResult:
        from pipeline.db.engine import engine_for

        with engine_for(self.settings.database_url).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        return True, {}

    def _broker(self) -> ProbeResult:
        timeout = self.settings.health_probe_timeout_s
        with self.celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        return True, {}

    def _workers(self, now: float) -> ProbeResult:
        window = self.settings.health_worker_seen_s
        replies = self.celery_app.control.ping(timeout=self.settings.health_probe_timeout_s / 2)
        for reply in replies or []:
            for hostname in reply:
                self._workers_seen[hostname] = now
        live = sorted(h for h, seen in self._workers_seen.items() if now - seen <= window)
        return bool(live), {"live": live, "seen_within_s": window}

    def _vendors(self) -> ProbeResult:
        from pipeline.breakers.inspection import vendor_breakers

        counts = vendor_breakers(vendors=self._vendor_names())
        share = self.settings.health_vendor_open_share
        return True, {
            "healthy": {vendor: c.healthy(share) for vendor, c in counts.items()},
            "breakers": {
                vendor: {"stored": c.breakers, "open": c.open, "half_open": c.half_open}
                for vendor, c in counts.items()
            },
        }

    @property
    def celery_app(self) -> Any:
        if self._celery_app is None:
            from workers.app import app

            self._celery_app = app
        return self._celery_app

    @staticmethod
    def _vendor_names() -> tuple[str, ...]:
        from pipeline.vendors.registry import GUARDED_VENDORS

        return GUARDED_VENDORS


def _timed(probe: Callable[[], ProbeResult]) -> ProbeResult:
    started = time.perf_counter()
    ok, detail = probe()
    return ok, {"ok": ok, **detail, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _outcome(future: Future[ProbeResult], timeout: float) -> ProbeResult:
    """A probe's answer; one that raised or is still running counts as down. Only the
    error's type is kept: messages can hold URLs, and URLs can hold passwords."""
    if not future.done():
        future.cancel()
        return False, {"ok": False, "error": f"no answer within {timeout:g}s"}
    error = future.exception()
    if error is not None:
        return False, {"ok": False, "error": type(error).__name__}
    return future.result()
