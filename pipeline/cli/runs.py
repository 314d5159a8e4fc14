"""`pipeline enrich --tenant T --file companies.csv [--then crm_sync,export] [--wait]`,
`pipeline sync|export --tenant T --run R [--wait]` and `pipeline runs show RUN_ID` (the run,
its items and reasons, and what healed, is deferred or was re-driven)."""

from __future__ import annotations

import argparse
import csv
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.cli.common import EXIT_FAILED, EXIT_OK, tenant_id
from pipeline.errors import InputError

CSV_COLUMNS = ("id", "name", "domain")
FINISHED = ("succeeded", "degraded", "failed")


def register(sub: Any) -> None:
    enrich = sub.add_parser("enrich", help="enqueue an enrichment run from a CSV file")
    enrich.add_argument("--tenant", type=tenant_id, required=True)
    enrich.add_argument(
        "--file", type=Path, required=True, help="CSV with columns name,domain (or id)"
    )
    enrich.add_argument(
        "--then", default="", help="stages to run after it, comma-separated: crm_sync,export"
    )
    enrich.add_argument("--wait", action="store_true", help="wait for the run and show it")
    enrich.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
    enrich.set_defaults(run=enrich_command)

    for name, help_text in (
        ("sync", "push an enrichment run's contacts to the tenant's CRM"),
        ("export", "export an enrichment run's companies to the tenant's ERP"),
    ):
        stage = sub.add_parser(name, help=help_text)
        stage.add_argument("--tenant", type=tenant_id, required=True)
        stage.add_argument("--run", required=True, help="the enrichment run it works from")
        stage.add_argument("--wait", action="store_true", help="wait for the run and show it")
        stage.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
        stage.set_defaults(run=stage_command, stage=name)

    show = sub.add_parser("runs", help="runs").add_subparsers(dest="runs_cmd", required=True)
    cmd = show.add_parser(
        "show", help="a run, its items and reasons; what healed, is deferred, was re-driven"
    )
    cmd.add_argument("run_id")
    cmd.set_defaults(run=show_command)


def read_companies(path: Path) -> list[int | dict[str, Any]]:
    """Companies from a CSV file; a row with an `id` names an existing company."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if not columns:
                raise InputError(f"{path}: the file is empty")
            unknown = [c for c in columns if c not in CSV_COLUMNS]
            if unknown:
                expected = ", ".join(CSV_COLUMNS)
                raise InputError(
                    f"{path}: unknown columns {', '.join(unknown)} (expected {expected})"
                )
            reader.fieldnames = columns
            rows = list(reader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a CSV file ({exc})") from None
    if not rows:
        raise InputError(f"{path}: no companies (a header but no rows)")
    companies: list[int | dict[str, Any]] = []
    for line, row in enumerate(rows, start=2):
        ident = (row.get("id") or "").strip()
        if ident:
            if not (ident.isascii() and ident.isdigit()):
                raise InputError(f"{path}, line {line}: id must be an integer, got {ident!r}")
            companies.append(int(ident))
        else:
            companies.append({"name": row.get("name") or "", "domain": row.get("domain") or ""})
    return companies


def enrich_command(args: argparse.Namespace) -> int:
    from pipeline import enqueue_enrichment

    then = [stage.strip() for stage in args.then.split(",") if stage.strip()]
    run_id = enqueue_enrichment(args.tenant, read_companies(args.file), then=then)
    print(f"enqueued run {run_id}" + (f" (then {', '.join(then)})" if then else ""))
    if not args.wait:
        return EXIT_OK
    view = wait_for(run_id, args.timeout)
    from pipeline.cli.render import run_details
    from pipeline.run_details import with_deferrals

    Console().print(run_details(with_deferrals(view)))
    return EXIT_FAILED if view.run.status == "failed" else EXIT_OK


def stage_command(args: argparse.Namespace) -> int:
    from pipeline import enqueue_crm_sync, enqueue_export

    enqueue = enqueue_crm_sync if args.stage == "sync" else enqueue_export
    run_id = enqueue(args.tenant, run_id=args.run)
    print(f"enqueued {args.stage} run {run_id}")
    if not args.wait:
        return EXIT_OK
    view = wait_for(run_id, args.timeout)
    from pipeline.cli.render import run_details
    from pipeline.run_details import with_deferrals

    Console().print(run_details(with_deferrals(view)))
    return EXIT_FAILED if view.run.status == "failed" else EXIT_OK


def wait_for(run_id: uuid.UUID, timeout: float) -> Any:
    from pipeline.runs import get_run

    deadline = time.monotonic() + timeout
    while True:
        view = get_run(run_id)
        if view is not None and view.run.status in FINISHED:
            return view
        if time.monotonic() > deadline:
            raise InputError(f"run {run_id} did not finish within {timeout:.0f}s (it goes on)")
        time.sleep(0.2)


def show_command(args: argparse.Namespace) -> int:
    from pipeline.cli.render import run_details
    from pipeline.run_details import read_run_details
    from pipeline.runs import run_id_from

    run_id = run_id_from(args.run_id)
    details = read_run_details(run_id)
    if details is None:
        raise InputError(f"no run {run_id}")
    Console().print(run_details(details))
    return EXIT_OK
