"""`pipeline` — the command line. Bad input ends with a message and exit code 2, never a
traceback; an unreachable dependency with exit code 3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 3


def _db_upgrade(args: argparse.Namespace) -> int:
    from pipeline.db.migrate import upgrade
    from pipeline.settings import get_settings

    url = args.url or get_settings().database_url
    upgrade(url)
    print(f"database at {_safe(url)} is at the latest revision")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate settings and reach Redis, the broker and the database."""
    import redis
    import sqlalchemy

    from pipeline.db.engine import engine_for
    from pipeline.settings import get_settings

    settings = get_settings()
    failures = 0
    for name, url in (("redis", settings.redis_url), ("broker", settings.broker_url)):
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
            print(f"ok    {name} {_safe(url)}")
        except redis.RedisError as exc:
            failures += 1
            print(f"FAIL  {name} {_safe(url)}: {exc}")
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        print(f"ok    database {_safe(settings.database_url)}")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        failures += 1
        print(f"FAIL  database {_safe(settings.database_url)}: {type(exc).__name__}")
    return EXIT_UNAVAILABLE if failures else 0


def _safe(url: str) -> str:
    """A URL fit to print: any password replaced."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", help="apply Alembic migrations")
    up.add_argument("--url", help="database URL (default: DATABASE_URL)")
    up.set_defaults(run=_db_upgrade)

    check = sub.add_parser("check", help="validate settings and reach every dependency")
    check.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PipelineError as exc:
        print(f"pipeline: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
