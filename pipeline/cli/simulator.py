"""`pipeline simulator --port N`: the vendor simulator in the foreground."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    cmd = sub.add_parser("simulator", help="run the vendor simulator on loopback")
    cmd.add_argument("--port", type=int, default=8700, help="port (0: any free port)")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.simulator import serve

    serve(args.port, args.seed, host=args.host)
    return 0
