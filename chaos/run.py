"""`make chaos` / `python -m chaos`: the chaos suite on a stack of its own.

    python -m chaos [--list] [--only NAME[,NAME]] [--companies N] [--settle S] [--keep]

Starts a private redis-server, a private Postgres cluster, the vendor simulator, a worker and
beat (`chaos.stack`); plays each scenario (`chaos.scenarios`) with fresh tenants; prints a row
per scenario and the summary line; ends every process it started, whatever happens. Exit
code 0 only if every scenario passed: lost=0, duplicates=0, stuck=0, every deferral healed,
and no scenario's own check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from types import FrameType

from chaos.measure import Database
from chaos.processes import say
from chaos.report import header, row_line, summary
from chaos.scenarios import SCENARIOS, by_name
from chaos.settings import LEASE_S
from chaos.stack import ChaosStack
from chaos.trial import Row, Scenario, Trial, play

COMPANIES = 100  # per tenant; each scenario has two tenants (a pipeline each)
# The reconcile deadline: after the fault ends, a run may take two leases (lost work is
# re-driven one lease after it stopped moving; a re-driven step may need a second pass) plus
# a minute of ordinary work on this small machine.
SETTLE_S = 2 * LEASE_S + 60


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--companies", type=int, default=COMPANIES, help="per tenant")
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="reconcile deadline, s")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    return parser.parse_args(argv)


def chosen(only: str) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    known = by_name()
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"chaos: unknown scenarios {unknown}; see --list")
    return [known[name] for name in names]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up below


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:<24} {scenario.about}")
        return 0
    scenarios = chosen(args.only)
    # Also when started in the background, where SIGINT arrives ignored: clean up either way.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from tests.support.stack import environment

    started = time.monotonic()
    rows: list[Row] = []
    stack = ChaosStack()
    try:
        with contextlib.ExitStack() as exits:
            exits.callback(stack.close)
            stack.start()
            settings = exits.enter_context(environment(stack.env))
            stack.launch(settings)
            db = Database(stack.database_url)
            print(header(), flush=True)
            for index, scenario in enumerate(scenarios):
                rows.append(play_one(stack, db, scenario, index, args))
                print(row_line(rows[-1]), flush=True)
    except KeyboardInterrupt:
        say("interrupted: everything it started is stopped")
        return 130
    finally:
        if args.keep:
            say(f"logs kept in {stack.dir}")
        else:
            stack.remove_files()
    say(f"total wall time {time.monotonic() - started:.0f}s")
    print(summary(rows), flush=True)
    return 0 if rows and all(row.passed for row in rows) else 1


def play_one(
    stack: ChaosStack, db: Database, scenario: Scenario, index: int, args: argparse.Namespace
) -> Row:
    trial = Trial(stack, scenario, index, args.companies, db)
    try:
        row = play(trial, args.settle)
    except Exception as exc:  # the harness itself failed here: a failed row, go on
        say(traceback.format_exc())
        row = Row(scenario.name, failures=[f"{type(exc).__name__}: {exc}"], notes=trial.notes)
    with contextlib.suppress(Exception):
        trial.admin.clear_faults()
    try:
        row.notes.extend(stack.ensure_healthy())
    except Exception as exc:
        row.failures.append(f"stack not healthy afterwards: {exc}")
    return row


if __name__ == "__main__":
    sys.exit(main())
