"""What a circuit breaker adds to a successful vendor call: ours, stock pybreaker, and PING.

Every vendor call in the pipeline goes through `breaker_for(tenant, vendor).call(...)`, so
the breaker's cost is paid on the hot path of every task. This script measures, in one run
and against the same Redis and the same `redis.Redis` client:

1. the mean cost of a successful call of a no-op function through our
   `DistributedCircuitBreaker` (closed, healthy: one atomic `admit` script per call);
2. the same through stock `pybreaker.CircuitBreaker` with `CircuitRedisStorage`;
3. a raw Redis `PING`, the floor any Redis-backed breaker is judged against;
4. our breaker again with 60,000 breaker hashes in Redis (10,000 tenants x 6 vendors, as in
   production), each call through the factory to a random one of them, to check that the
   cost stays flat as breakers multiply.

Methods are timed in interleaved rounds (the order rotates each round) and each figure is
the median of the round means, so drift on a small, noisy machine hits all methods alike.
In phase 4 every breaker is built once first (as a worker does on first use; the build cost
is printed) and each timed call includes the factory's cache lookup. Round trips per call
are counted, not assumed: a connection class that counts socket writes (one per request,
one per pipeline), next to the server's own `total_commands_processed` delta (which
also counts commands run inside Lua scripts).

Everything lives under a random key prefix in a dedicated db and is deleted at the end,
also on error. The last line is machine-readable: `ours/ping=<x> stock/ping=<y>`.

    .venv/bin/python benchmarks/breaker_overhead.py [--calls 1000] [--rounds 21]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pybreaker
import redis

from pipeline.breakers import BreakerFactory
from pipeline.breakers.storage import RedisBreakerStorage
from pipeline.settings import load_settings

VENDORS = ("crawler", "search", "apify_linkedin", "lusha", "zerobounce", "crm")
WARMUP_CALLS = 500
ROUND_TRIP_CALLS = 1000
SEED = 20240601

Call = Callable[[], object]


def _noop() -> int:
    return 42


@dataclass(frozen=True)
class Timing:
    """Mean wall-clock and client-CPU seconds per call, one of each per round."""

    rounds: tuple[float, ...]
    cpu_rounds: tuple[float, ...]

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds) * 1e6

    @property
    def cpu_us(self) -> float:
        return statistics.median(self.cpu_rounds) * 1e6

    @property
    def spread_us(self) -> str:
        return f"{min(self.rounds) * 1e6:.1f}-{max(self.rounds) * 1e6:.1f}"


def time_calls(call: Call, n: int) -> tuple[float, float]:
    """Mean wall and CPU seconds per call of `call` over `n` calls (GC off, as timeit does).

    CPU is this process's own time (Python work and socket syscalls, not the wait for Redis):
    far less noisy than wall time, and the part of the cost the client code decides."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu_start, start = time.process_time(), time.perf_counter()
        for _ in itertools.repeat(None, n):
            call()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return wall / n, cpu / n
    finally:
        if gc_was_enabled:
            gc.enable()


def measure(methods: dict[str, Call], *, calls: int, rounds: int) -> dict[str, Timing]:
    """Warm each method up, then time them in interleaved rounds with a rotating order."""
    for call in methods.values():
        for _ in range(WARMUP_CALLS):
            call()
    names = list(methods)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_calls(methods[name], calls))
    return {
        name: Timing(tuple(wall for wall, _ in pairs), tuple(cpu for _, cpu in pairs))
        for name, pairs in samples.items()
    }


def through_factory(factory: BreakerFactory, pairs: Sequence[tuple[int, str]]) -> Call:
    """A call of the no-op through `factory(tenant, vendor)` for the next pair of `pairs`:
    the per-process cache lookup is timed, and so is building a breaker on a miss."""
    following = itertools.cycle(pairs)

    def call() -> object:
        tenant, vendor = next(following)
        return factory(tenant, vendor).call(_noop)

    return call


def cycling(breakers: Sequence[pybreaker.CircuitBreaker]) -> Call:
    """A call of the no-op through the next breaker of `breakers`, round-robin."""
    following: Iterator[pybreaker.CircuitBreaker] = itertools.cycle(breakers)

    def call() -> object:
        return next(following).call(_noop)

    return call


# -- round trips -------------------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """Counts socket writes: one per command sent alone, one per pipeline."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@dataclass(frozen=True)
class RoundTrips:
    round_trips: float  # requests this client sent per call
    server_commands: float  # commands Redis executed per call, including inside Lua


def count_round_trips(client: redis.Redis, call: Call, n: int = ROUND_TRIP_CALLS) -> RoundTrips:
    """Round trips and server commands per call (best of 3, in case others use this Redis)."""
    for _ in range(50):
        call()  # connect, load scripts
    best_writes, best_commands = float("inf"), float("inf")
    for _ in range(3):
        before = commands_processed(client)
        writes_before = CountingConnection.writes
        for _ in range(n):
            call()
        writes = CountingConnection.writes - writes_before
        after = commands_processed(client)  # counts the first INFO, not itself
        best_writes = min(best_writes, writes / n)
        best_commands = min(best_commands, (after - before - 1) / n)
    return RoundTrips(best_writes, best_commands)


# -- the breakers ------------------------------------------------------------------------------


def stock_breaker(client: redis.Redis, prefix: str) -> pybreaker.CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{prefix}:stock"
    )
    return pybreaker.CircuitBreaker(fail_max=3, reset_timeout=300, state_storage=storage)


def seed_breaker_keys(client: redis.Redis, prefix: str, tenants: int) -> int:
    """Write one closed, healthy breaker hash per (tenant, vendor), as `admit` would find it."""
    written = 0
    pipe = client.pipeline(transaction=False)
    for tenant_id in range(1, tenants + 1):
        for vendor in VENDORS:
            key = RedisBreakerStorage(client, prefix=prefix, tenant_id=tenant_id, vendor=vendor).key
            pipe.hset(key, mapping={"s": pybreaker.STATE_CLOSED, "f": 0, "g": 0})
            written += 1
        if tenant_id % 500 == 0:
            pipe.execute()
    pipe.execute()
    return written


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    prefix = f"bench-{secrets.token_hex(6)}"
    client = redis.Redis(host=args.host, port=args.port, db=args.db)
    counting = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=CountingConnection, host=args.host, port=args.port, db=args.db
        )
    )
    settings = load_settings(redis_key_prefix=prefix)
    print(
        f"redis {args.host}:{args.port} db={args.db} prefix={prefix} (keys already in db: "
        f"{client.dbsize()})"
    )
    try:
        ours = BreakerFactory(client, settings, sinks=())(1, "crm")
        stock = stock_breaker(client, prefix)
        empty = measure(
            {"ping": client.ping, "ours": cycling([ours]), "stock": cycling([stock])},
            calls=args.calls,
            rounds=args.rounds,
        )

        trips = {
            "ping": count_round_trips(counting, counting.ping),
            "ours": count_round_trips(
                counting, cycling([BreakerFactory(counting, settings, sinks=())(1, "crm")])
            ),
            "stock": count_round_trips(counting, cycling([stock_breaker(counting, prefix)])),
        }

        started = time.perf_counter()
        keys = seed_breaker_keys(client, prefix, args.tenants)
        seeded_s = time.perf_counter() - started
        factory = BreakerFactory(client, settings, sinks=())
        rng = random.Random(SEED)
        everywhere = [
            (1 + i // len(VENDORS), VENDORS[i % len(VENDORS)])
            for i in (rng.randrange(keys) for _ in range(args.calls * (args.rounds + 1)))
        ]
        started = time.perf_counter()
        for index in range(keys):  # every worker builds its breakers once, then reuses them
            factory(1 + index // len(VENDORS), VENDORS[index % len(VENDORS)])
        build_us = (time.perf_counter() - started) / keys * 1e6
        full = measure(
            {"ping": client.ping, "ours": through_factory(factory, everywhere)},
            calls=args.calls,
            rounds=args.rounds,
        )
    finally:
        deleted = delete_prefix(client, prefix)
        left = sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=5000))
        print(f"cleanup: deleted {deleted} keys under {prefix}:*, {left} left")

    ping, ours_us, stock_us = (empty[m].median_us for m in ("ping", "ours", "stock"))
    ping_full, ours_full = full["ping"].median_us, full["ours"].median_us
    rows = [
        ("redis PING", empty["ping"], empty["ping"], trips["ping"]),
        ("ours (DistributedCircuitBreaker)", empty["ours"], empty["ping"], trips["ours"]),
        ("stock pybreaker + CircuitRedisStorage", empty["stock"], empty["ping"], trips["stock"]),
        (f"redis PING, {keys} keys", full["ping"], full["ping"], None),
        (f"ours, {keys} keys, breaker_for-style", full["ours"], full["ping"], None),
    ]
    print()
    print(
        f"successful closed-state call of a no-op; {args.calls} calls x {args.rounds} rounds, "
        f"median of round means ({keys} keys seeded in {seeded_s:.1f}s)"
    )
    header = ("wall us", "rounds min-max", "x ping", "cpu us", "x ping", "rtt", "cmds")
    widths = (9, 16, 8, 8, 8, 6, 6)
    print(f"{'method':<42}" + "".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for label, timing, base, rt in rows:
        cells = (
            f"{timing.median_us:.1f}",
            timing.spread_us,
            f"{timing.median_us / base.median_us:.2f}",
            f"{timing.cpu_us:.1f}",
            f"{timing.cpu_us / base.cpu_us:.2f}",
            f"{rt.round_trips:.2f}" if rt else "-",
            f"{rt.server_commands:.2f}" if rt else "-",
        )
        print(f"{label:<42}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(
        "wall: elapsed per call; cpu: this process's CPU per call (Python + syscalls);\n"
        "rtt: requests sent per call; cmds: commands Redis ran per call, inside Lua included"
    )
    print()
    print(
        f"round_trips_per_call ours={trips['ours'].round_trips:.2f} "
        f"stock={trips['stock'].round_trips:.2f}"
    )
    print(
        "flatness with Redis drift between the two phases taken out: "
        f"(ours_60k/ping_60k)/(ours/ping)={(ours_full / ping_full) / (ours_us / ping):.2f}"
    )
    print(
        f"keys={keys} ours_60k/ping={ours_full / ping_full:.2f} "
        f"ours_60k/ours_empty={ours_full / ours_us:.2f}"
    )
    print(f"building a breaker (once per tenant x vendor per process, no I/O): {build_us:.1f} us")
    print(f"ours/ping={ours_us / ping:.2f} stock/ping={stock_us / ping:.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per method/round")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants to seed (x6)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--db", type=int, default=14, help="dedicated Redis db")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
