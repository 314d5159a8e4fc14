"""Enrichment throughput against bare Celery chains, and vendor calls during an outage.

(a) Throughput. An enrichment run sends one Celery chain of 7 steps per company; the steps
    read and write Postgres, ask the tenant's breaker and a bulkhead slot in Redis, and
    call vendors. What all that costs is measured against the floor the broker and the
    worker set: N bare chains of as many no-op tasks (`bench.noop`, `benchmarks/bench_app.py`) on
    the same broker, result backend and worker. Both go through one real prefork worker
    (2 processes) and zero-latency simulated vendors. Ours: items/s from
    `enqueue_enrichment` until `runs.get_run` shows the run terminal. Bare: chains/s from
    the first send until the last chain's last task has counted itself done in Redis.
    After a small warm-up run of each, the two alternate (ours, bare, ours, bare, ...);
    each figure is the median over its repeats, and `throughput_ratio` is the median of
    the per-repeat ratios ours / bare (each pair ran back to back, under the same load).
    Target: >= 0.5. The load other processes put on the machine meanwhile is printed:
    on a small shared machine it moves both figures by a third.

(b) Outage. Tenant A runs M companies while the contact vendor `apify_linkedin` is down
    for A only, for T seconds, starting just after A's first contact lookup; tenant B
    runs M companies at the same time. The breaker should let through no more than
    `CB_ERROR_THRESHOLD` failures to open, then `CB_HALF_OPEN_MAX_CALLS` probes per
    `CB_COOL_OFF_S`: the floor is `threshold + ceil(T / cool_off) x half_open`. Counted:
    the calls that reached the vendor for A and failed (the simulator's own counter; no
    other fault is set, so they are exactly the calls made during the outage). Target:
    <= floor + 2. Tenant B's calls to the same vendor must all succeed (isolation).

    The items of a run advance through the FIFO queue in lockstep, one step per pass, so
    a run's contact lookups come as one burst, which an open breaker shortens to
    milliseconds. To keep A asking throughout the outage, A's and B's runs are started
    side by side (the worker's consumption is paused while both are enqueued, so their
    items alternate in the queue) and the contact vendor answers in a latency computed
    from M and T: B's slow lookups between A's spread A's over the outage. The script
    checks that the outage lay inside A's demand: A had successful lookups before and after.

One worker serves both parts, started with `CB_COOL_OFF_S` small (part (b) needs it; part
(a) has no faults and never leaves the closed state, whose cost does not depend on it).
The simulator runs in a process of its own, so its request threads share no GIL with the
polling here.

Everything is throw-away: a Postgres database (dropped at the end), Redis db 14 (flushed at
start and end), the simulator and the worker (stopped), also on error. The last line is
machine-readable: `throughput_ratio=<x> outage_calls=<n> outage_floor=<m>`.

    .venv/bin/python benchmarks/enrichment_throughput.py [--companies 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the repo's packages importable

from pipeline.db.models import FINISHED_RUN_STATUSES  # noqa: E402
from tests.support.processes import Worker, wait_until  # noqa: E402
from tests.support.stack import environment, flushed_redis, simulator_process, throwaway_database  # noqa: E402

NOOP = "bench.noop"  # registered by benchmarks/bench_app.py
TERMINAL_RUN = set(FINISHED_RUN_STATUSES)
POLL_S = 0.05
CONTACT_VENDOR = "apify_linkedin"
OTHER_LOAD_WARNING = 0.2  # cores kept busy by processes not ours: say the figures are noisy
T = TypeVar("T")


# -- other load on the machine ----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SHARED_SERVICES = {"postgres", "redis-server"}


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _ours_s(pids: set[int]) -> float:
    """CPU seconds of `pids` and of the shared services (Postgres, Redis) so far."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, _, rest = stat.read().rpartition(")")
        except OSError:
            continue
        comm = head.split("(", 1)[1]
        if int(entry) in pids or comm in SHARED_SERVICES:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@contextmanager
def other_load(pids: Callable[[], set[int]], into: list[float]) -> Iterator[None]:
    """Appends to `into` the cores (average) that processes other than ours, Postgres and
    Redis kept busy during the block: other sessions' tests on a shared machine."""
    mine = pids()
    busy, ours, started = _busy_s(), _ours_s(mine), time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    into.append(max(0.0, (_busy_s() - busy) - (_ours_s(mine) - ours)) / elapsed)


# -- (a) throughput ----------------------------------------------------------------------------


def companies_for(tenant: int, n: int) -> list[dict[str, str]]:
    """Fresh companies (no contacts yet), so every chain takes the full healthy path."""
    return [{"name": f"Company {i}", "domain": f"co-{i}-t{tenant}.example.com"} for i in range(n)]


def finished_run(run_id: uuid.UUID, timeout: float) -> Any:
    from pipeline import runs

    def done() -> Any:
        view = runs.get_run(run_id)
        return view if view is not None and view.run.status in TERMINAL_RUN else None

    return wait_until(done, timeout=timeout, what=f"run {run_id} to finish")


def time_enrichment(tenant: int, n: int, timeout: float) -> float:
    """Items per second: `enqueue_enrichment` of n companies until the run is terminal."""
    from pipeline import enqueue_enrichment

    companies = companies_for(tenant, n)
    started = time.perf_counter()
    run_id = enqueue_enrichment(tenant, companies)
    view = finished_run(run_id, timeout)
    elapsed = time.perf_counter() - started
    done = view.run.items_succeeded + view.run.items_degraded
    if done != n or view.run.status != "succeeded":
        print(f"  warning: run {run_id} {view.run.status}, {done}/{n} items processed")
    return n / elapsed


def chain_length() -> int:
    """Steps in one company's enrichment chain with the default options (tasks/enrichment.py)."""
    from pipeline.enqueue import EnrichmentOptions
    from tasks.enrichment import enrichment_chain

    options = EnrichmentOptions.resolve(None).model_dump()
    company = {"id": 1, "name": "Acme", "domain": "acme.example"}
    ctx = {"run_id": "", "item_id": 0, "tenant_id": 1, "company": company, "options": options}
    return len(enrichment_chain({**ctx, "reasons": []}).tasks)


def time_bare_chains(client: redis.Redis, n: int, timeout: float) -> float:
    """Chains per second: n chains of no-op tasks as long as an enrichment chain, first send
    to last done."""
    from celery import chain

    from workers.app import app

    length = chain_length()
    done_key = f"bench:done:{uuid.uuid4().hex}"
    started = time.perf_counter()
    for i in range(n):
        chain(
            app.signature(NOOP, args=(i,), immutable=True),
            *(app.signature(NOOP) for _ in range(length - 2)),
            app.signature(NOOP, kwargs={"done_key": done_key}),
        ).apply_async()
    wait_until(
        lambda: int(client.get(done_key) or 0) >= n, timeout=timeout, what=f"{n} bare chains"
    )
    elapsed = time.perf_counter() - started
    client.delete(done_key)
    return n / elapsed


@dataclass(frozen=True)
class Throughput:
    ours: tuple[float, ...]
    bare: tuple[float, ...]
    other_cores: tuple[float, ...]  # other processes' load during each measurement

    @property
    def ratio(self) -> float:
        """Median of the per-repeat ratios: each pair ran back to back, under the same load."""
        return statistics.median(o / b for o, b in zip(self.ours, self.bare, strict=True))


def measure_throughput(
    client: redis.Redis, pids: Callable[[], set[int]], args: argparse.Namespace
) -> Throughput:
    n, timeout = args.companies, args.run_timeout
    time_enrichment(1, args.warmup, timeout)
    time_bare_chains(client, args.warmup, timeout)
    ours: list[float] = []
    bare: list[float] = []
    other: list[float] = []
    for repeat in range(args.repeats):
        with other_load(pids, other):
            ours.append(time_enrichment(10 + repeat, n, timeout))
        with other_load(pids, other):
            bare.append(time_bare_chains(client, n, timeout))
        print(
            f"  repeat {repeat + 1}: enrichment {ours[-1]:.1f} items/s, "
            f"bare chains {bare[-1]:.1f} chains/s "
            f"(other processes: {other[-2]:.2f}, {other[-1]:.2f} cores)"
        )
    return Throughput(tuple(ours), tuple(bare), tuple(other))


# -- (b) outage --------------------------------------------------------------------------------

TENANT_A, TENANT_B = 101, 102
OUTAGE_LEAD_S = 0.5  # the outage starts this long after A's first contact call
OUTAGE_TAIL_S = 4.0  # A's contact lookups should go on at least this long after it


@dataclass(frozen=True)
class Outage:
    seconds: float
    floor: int
    calls_a: int  # calls to the down vendor for A that failed: all made during the outage
    calls_a_ok_before: int
    calls_a_ok_after: int
    calls_b: int
    errors_b: int
    calls_b_during: int
    transitions_a: tuple[str, ...]
    transitions_b: tuple[str, ...]
    status_a: str
    status_b: str
    run_a_s: float
    latency_ms: int

    @property
    def inside_demand(self) -> bool:
        """A asked the vendor (successfully) both before and after the outage."""
        return self.calls_a_ok_before > 0 and self.calls_a_ok_after > 0

    @property
    def isolated(self) -> bool:
        return self.calls_b > 0 and self.errors_b == 0 and self.calls_b_during > 0


def contact_latency_ms(args: argparse.Namespace) -> int:
    """Latency of the contact vendor that keeps A's lookups going past the outage.

    A's and B's lookups alternate in the queue; each holds one of `concurrency` processes
    for the latency, except A's while its breaker is open, which cost next to nothing. So
    pairs (A, B) go by at concurrency / (2 x latency) per second outside the outage and
    twice as fast inside it, and M pairs must last lead + T + tail.
    """
    if args.contact_latency_ms is not None:
        return int(args.contact_latency_ms)
    pair_seconds = OUTAGE_LEAD_S / 2 + args.outage_s + OUTAGE_TAIL_S / 2
    return math.ceil(1000 * args.concurrency * pair_seconds / args.outage_companies)


@contextmanager
def consumption_paused(worker_name: str, queue: str) -> Iterator[None]:
    """The worker takes nothing from `queue` inside the block; what was sent there meanwhile
    then starts at once on all its processes (both runs' `start_run` side by side)."""
    from workers.app import app

    app.control.cancel_consumer(queue, destination=[worker_name], reply=True)
    try:
        yield
    finally:
        app.control.add_consumer(queue, destination=[worker_name], reply=True)


def _count(stats: dict[str, Any], kind: str, tenant: int) -> int:
    return int(stats[kind].get(CONTACT_VENDOR, {}).get(str(tenant), 0))


def measure_outage(sim: Any, worker_name: str, args: argparse.Namespace) -> Outage:
    from pipeline import enqueue_enrichment
    from pipeline.db.breaker_events import breaker_events
    from pipeline.settings import get_settings

    settings = get_settings()
    seconds = args.outage_s
    floor = settings.cb_error_threshold + (
        math.ceil(seconds / settings.cb_cool_off_s) * settings.cb_half_open_max_calls
    )
    latency = contact_latency_ms(args)
    sim.reset()
    sim.set_fault(vendor=CONTACT_VENDOR, latency_ms=latency)  # every tenant: spreads the calls

    with consumption_paused(worker_name, "default"):
        run_a = enqueue_enrichment(TENANT_A, companies_for(TENANT_A, args.outage_companies))
        run_b = enqueue_enrichment(TENANT_B, companies_for(TENANT_B, args.outage_companies))
    started = time.time()
    wait_until(
        lambda: _count(sim.stats(), "calls", TENANT_A) >= 1,
        timeout=args.run_timeout,
        what="tenant A's first contact lookup",
    )
    window = (time.time() + OUTAGE_LEAD_S, time.time() + OUTAGE_LEAD_S + seconds)
    sim.set_fault(
        vendor=CONTACT_VENDOR, tenant=TENANT_A, outage={"start": window[0], "end": window[1]}
    )
    wait_until(lambda: time.time() >= window[0], timeout=5, what="the outage to start")
    b_at_start = _count(sim.stats(), "calls", TENANT_B)
    wait_until(lambda: time.time() >= window[1], timeout=seconds + 5, what="the outage to end")
    b_at_end = _count(sim.stats(), "calls", TENANT_B)
    view_a = finished_run(run_a, args.run_timeout)
    run_a_s = time.time() - started
    view_b = finished_run(run_b, args.run_timeout)
    stats = sim.stats()

    ok_before, ok_after = _ok_calls_around(TENANT_A, window)
    return Outage(
        seconds=seconds,
        floor=floor,
        calls_a=_count(stats, "errors", TENANT_A),
        calls_a_ok_before=ok_before,
        calls_a_ok_after=ok_after,
        calls_b=_count(stats, "calls", TENANT_B),
        errors_b=_count(stats, "errors", TENANT_B),
        calls_b_during=b_at_end - b_at_start,
        transitions_a=tuple(
            f"{e.from_state}->{e.to_state} {e.at.timestamp() - window[0]:+.2f}s"
            for e in breaker_events(TENANT_A, CONTACT_VENDOR)
        ),
        transitions_b=tuple(
            f"{e.from_state}->{e.to_state}" for e in breaker_events(TENANT_B, CONTACT_VENDOR)
        ),
        status_a=f"{view_a.run.status} ({view_a.run.degraded_reasons or 'no reasons'})",
        status_b=f"{view_b.run.status} ({view_b.run.degraded_reasons or 'no reasons'})",
        run_a_s=run_a_s,
        latency_ms=latency,
    )


def _ok_calls_around(tenant: int, window: tuple[float, float]) -> tuple[int, int]:
    """A's successful calls to the vendor that ended before the outage, and after it."""
    from sqlalchemy import select

    from pipeline.db.engine import session_scope
    from pipeline.db.models import VendorCall

    with session_scope() as session:
        ended = session.scalars(
            select(VendorCall.at).where(
                VendorCall.tenant_id == tenant,
                VendorCall.vendor == CONTACT_VENDOR,
                VendorCall.ok.is_(True),
            )
        ).all()
    times = [at.timestamp() for at in ended]
    return sum(t < window[0] for t in times), sum(t > window[1] for t in times)


# -- the run -----------------------------------------------------------------------------------


def report(throughput: Throughput, outage: Outage, args: argparse.Namespace) -> None:
    ours, bare = statistics.median(throughput.ours), statistics.median(throughput.bare)
    print()
    steps = chain_length()
    print(
        f"(a) throughput, {args.companies} companies / chains of {steps} tasks, "
        f"{args.concurrency} prefork processes, zero-latency vendors, median of {args.repeats}"
    )
    print(f"  enrichment   {ours:7.1f} items/s   runs: {_listed(throughput.ours)}")
    print(f"  bare chains  {bare:7.1f} chains/s  runs: {_listed(throughput.bare)}")
    print(
        f"  one step done every {1000 / (ours * steps):.1f} ms (enrichment), "
        f"one no-op task every {1000 / (bare * steps):.1f} ms (bare)"
    )
    print(
        f"  throughput_ratio {throughput.ratio:.3f} (target >= 0.5: "
        f"{'met' if throughput.ratio >= 0.5 else 'NOT met'})"
    )
    busiest = max(throughput.other_cores)
    if busiest > OTHER_LOAD_WARNING:
        print(
            f"  warning: other processes kept up to {busiest:.2f} of the machine's "
            f"{os.cpu_count()} cores busy during the measurements; figures are noisy"
        )
    print()
    print(
        f"(b) outage of {CONTACT_VENDOR} for tenant A, {outage.seconds:g}s, "
        f"{args.outage_companies} companies each for A and B at once, "
        f"contact latency {outage.latency_ms} ms, CB_COOL_OFF_S={args.cool_off_s:g}"
    )
    print(
        f"  calls that reached the down vendor for A: {outage.calls_a} "
        f"(floor {outage.floor}; target <= {outage.floor + 2}: "
        f"{'met' if outage.calls_a <= outage.floor + 2 else 'NOT met'})"
    )
    print(
        f"  A's breaker (times from the outage's start): "
        f"{', '.join(outage.transitions_a) or 'no transitions'}"
    )
    print(
        f"  A's successful calls: {outage.calls_a_ok_before} before the outage, "
        f"{outage.calls_a_ok_after} after it; outage inside A's demand: "
        f"{'yes' if outage.inside_demand else 'NO (the figure understates)'}"
    )
    print(f"  A's run: {outage.status_a}, {outage.run_a_s:.1f}s")
    print(
        f"  B: {outage.calls_b} calls ({outage.calls_b_during} during the outage), "
        f"{outage.errors_b} failed; breaker {', '.join(outage.transitions_b) or 'never moved'}; "
        f"isolated: {'yes' if outage.isolated else 'NO'}"
    )
    print(f"  B's run: {outage.status_b}")


def _listed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--companies", type=int, default=200, help="N: companies per run (a)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats (a)")
    parser.add_argument("--warmup", type=int, default=10, help="companies/chains to warm up")
    parser.add_argument("--outage-companies", type=int, default=60, help="M: per tenant (b)")
    parser.add_argument("--outage-s", type=float, default=6.0, help="T: outage length (b)")
    parser.add_argument("--cool-off-s", type=float, default=2.0, help="CB_COOL_OFF_S")
    parser.add_argument(
        "--contact-latency-ms", type=int, default=None, help="(b); default: from M and T"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--run-timeout", type=float, default=90.0, help="deadline per run, s")
    parser.add_argument("--redis-db", type=int, default=14, help="dedicated Redis db")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, log_dir: Path) -> tuple[Throughput, Outage]:
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    with (
        flushed_redis(redis_url) as client,
        throwaway_database("pipeline_bench") as database_url,
        simulator_process(seed=11) as sim,
    ):
        env = {
            "DATABASE_URL": database_url,
            "BROKER_URL": redis_url,
            "RESULT_BACKEND": redis_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"bench-{secrets.token_hex(4)}",
            "VENDOR_BASE_URL": sim.url,
            "LOG_JSON": "true",
            "CB_COOL_OFF_S": str(args.cool_off_s),
            "CB_HALF_OPEN_MAX_CALLS": "1",
            "CB_ERROR_THRESHOLD": "3",
        }
        print(
            f"redis db {args.redis_db}, database {database_url.rsplit('/', 1)[1]}, "
            f"simulator {sim.url}, worker: prefork x{args.concurrency}"
        )
        with environment(env):
            return measure(client, sim, env, args, log_dir)


def measure(
    client: redis.Redis, sim: Any, env: dict[str, str], args: argparse.Namespace, log_dir: Path
) -> tuple[Throughput, Outage]:
    from workers.app import app

    worker = Worker(
        env,
        log_dir / "worker.log",
        concurrency=args.concurrency,
        name="bench",
        app_module="benchmarks.bench_app",
    )
    try:
        worker.wait_ready(app)
        print("(a) throughput: warm-up, then enrichment and bare chains alternating")
        ours = {os.getpid(), sim.proc.pid, worker.proc.pid}
        throughput = measure_throughput(client, lambda: ours | set(worker.children()), args)
        print("(b) outage: tenants A and B at once, A's contact vendor down for a while")
        outage = measure_outage(sim.admin, worker.name, args)
    except BaseException:
        print(f"worker log (tail):\n{worker.log_path.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        worker.stop()
    return throughput, outage


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="enrichment-bench-") as log_dir:
        throughput, outage = run(args, Path(log_dir))
    report(throughput, outage, args)
    print(
        f"throughput_ratio={throughput.ratio:.2f} outage_calls={outage.calls_a} "
        f"outage_floor={outage.floor}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
