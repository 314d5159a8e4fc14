"""`pipeline` — the command line, on Click.

Each module here holds one command or one group of them; all are registered below, in
the order `pipeline --help` lists them. Every failure goes through one handler
(`pipeline.cli.failures`): a one-line message and an exit code, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import click

from pipeline.cli import api, apikeys, check, credentials, demo, dlq, enqueue, flower, ops, runs
from pipeline.cli import simulator as simulator_commands
from pipeline.cli.failures import run_guarded

PROG = "pipeline"


def _version() -> str:
    try:
        return version("resilient-pipeline")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Exit codes:
  0  done; a run waited for succeeded or degraded
  1  a run waited for failed (its pipeline stopped), or the demo's check failed
  2  bad input (the message names what was wrong)
  3  a dependency unavailable: database down or not migrated, Redis, broker,
     no worker, the simulator (the message says what to start or run)
  4  --wait ran out of --timeout; the work goes on
\b
Shell completion (bash; zsh_source and fish_source likewise):
  eval "$(_PIPELINE_COMPLETE=bash_source pipeline)"
\b
Example:
  pipeline enrich --tenant 7 --file companies.csv --then crm_sync,export --wait""",
)
@click.version_option(_version(), "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """Run, watch and repair the resilient job pipeline: enrichment, CRM sync and ERP
    export per tenant, on Celery. Settings come from the environment (see README)."""


for command in (
    check.check,
    ops.db,
    enqueue.enrich,
    enqueue.sync,
    enqueue.export,
    runs.runs,
    dlq.dlq,
    ops.reconcile,
    credentials.credentials,
    apikeys.apikeys,
    simulator_commands.simulator,
    demo.demo,
    api.api,
    flower.flower,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run `argv` (default: the process's arguments), return the exit
    code. Shell completion (`_PIPELINE_COMPLETE=...`) prints its script and exits 0.

    Run as the process's command (no `argv`), what the core logs goes to stderr, warnings
    and worse: stdout is the command's output (`RUN_ID=$(pipeline enrich ... --quiet)`);
    `api`, `demo` and `reconcile` set their own. Called with `argv` (a test, a host
    program), the caller's logging is left alone."""
    if argv is None:
        from pipeline.logs import configure_logging

        configure_logging("WARNING", json=False)
    args = list(sys.argv[1:] if argv is None else argv)

    def invoke() -> int:
        result = cli.main(args=args, prog_name=PROG, standalone_mode=False)
        return result if isinstance(result, int) else 0

    return run_guarded(invoke)


if __name__ == "__main__":
    sys.exit(main())
