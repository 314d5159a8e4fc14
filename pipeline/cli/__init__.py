"""`pipeline` — the command line. Bad input ends with a message and exit code 2, never a
traceback; an unreachable dependency with exit code 3.

Each group of commands is a module here with a `register(subparsers)` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import api, apikeys, credentials, demo, dlq, flower, ops, runs, simulator
from pipeline.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE
from pipeline.errors import DATABASE_ERRORS, DependencyUnavailableError, PipelineError

COMMAND_GROUPS = (ops, runs, simulator, demo, credentials, dlq, apikeys, api, flower)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except DependencyUnavailableError as exc:
        print(f"pipeline: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except PipelineError as exc:
        print(f"pipeline: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"pipeline: the database is unreachable ({type(cause).__name__})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
