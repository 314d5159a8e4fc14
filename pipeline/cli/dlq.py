"""`pipeline dlq list|show|replay|purge`: the dead-letter store, from a shell.

`replay ID` re-sends one entry; `replay --run R` re-runs a run's dead and failed items;
`replay --all --tenant T` does that for every run of the tenant with dead letters.
`purge --older-than 30d` forgets entries whose last failure is older than that.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import Any

from pipeline.cli.common import EXIT_OK, tenant_id
from pipeline.errors import InputError

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def age(value: str) -> timedelta:
    """argparse type: `30d`, `12h`, `15m` or `90s`."""
    match = _AGE.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"an age like 30d, 12h, 15m or 90s, got {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def register(sub: Any) -> None:
    group = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    commands = group.add_subparsers(dest="dlq_cmd", required=True)

    show_all = commands.add_parser("list", help="dead letters, newest first")
    show_all.add_argument("--tenant", type=tenant_id)
    show_all.add_argument("--run", dest="run_id", help="a run id")
    show_all.add_argument("--status", choices=("dead", "replayed"))
    show_all.add_argument("--limit", type=int, default=50)
    show_all.set_defaults(run=list_command)

    show = commands.add_parser("show", help="one dead letter, with its traceback")
    show.add_argument("id", type=int)
    show.set_defaults(run=show_command)

    replay = commands.add_parser("replay", help="re-send an entry, or re-run a run's dead items")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="a dead letter id")
    which.add_argument("--run", dest="run_id", help="re-run this run's dead and failed items")
    which.add_argument("--all", action="store_true", help="every dead letter of --tenant")
    replay.add_argument("--tenant", type=tenant_id)
    replay.set_defaults(run=replay_command)

    purge = commands.add_parser("purge", help="forget entries older than an age")
    purge.add_argument("--older-than", type=age, required=True, metavar="AGE")
    purge.set_defaults(run=purge_command)


def list_command(args: argparse.Namespace) -> int:
    from pipeline import dead_letters
    from pipeline.runs import run_id_from

    entries = dead_letters.list_entries(
        tenant_id=args.tenant,
        run_id=None if args.run_id is None else run_id_from(args.run_id),
        status=args.status,
        limit=args.limit,
    )
    for e in entries:
        print(
            f"{e.id}\t{e.status}\t{e.last_failed_at:%Y-%m-%d %H:%M:%S}\ttenant={e.tenant_id}\t"
            f"{e.task_name}\t{e.path}\t{e.error_code}\truns={e.run_id or '-'}"
        )
    if not entries:
        print("no dead letters")
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    from pipeline import dead_letters

    e = dead_letters.get_entry(args.id)
    fields = {
        "id": e.id,
        "status": e.status,
        "task": e.task_name,
        "task_id": e.task_id,
        "path": e.path,
        "error_code": e.error_code,
        "message": e.message,
        "tenant_id": e.tenant_id,
        "run_id": str(e.run_id) if e.run_id else None,
        "item_id": e.item_id,
        "attempts": e.attempts,
        "failures": e.failures,
        "first_failed_at": e.first_failed_at.isoformat(),
        "last_failed_at": e.last_failed_at.isoformat(),
        "correlation_id": e.correlation_id,
        "args": e.args,
        "kwargs": e.kwargs,
        "replay_task_id": e.replay_task_id,
    }
    print(json.dumps(fields, indent=2, default=str))
    if e.traceback:
        print(e.traceback)
    return EXIT_OK


def replay_command(args: argparse.Namespace) -> int:
    from pipeline.replay import replay_entry, replay_run, replay_tenant

    if args.all:
        if args.tenant is None:
            raise InputError("replay --all needs --tenant")
        print(f"replayed {replay_tenant(args.tenant)} items and entries of tenant {args.tenant}")
    elif args.run_id:
        count = replay_run(args.run_id, tenant_id=args.tenant)
        print(f"re-running {count} dead or failed items of run {args.run_id}")
    else:
        task_id = replay_entry(args.id, tenant_id=args.tenant)
        print(f"replayed dead letter {args.id} as task {task_id}")
    return EXIT_OK


def purge_command(args: argparse.Namespace) -> int:
    from pipeline import dead_letters

    print(f"purged {dead_letters.purge(args.older_than)} dead letters")
    return EXIT_OK
