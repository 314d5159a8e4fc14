"""Operations: `pipeline check`, `pipeline db upgrade`."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import EXIT_UNAVAILABLE, safe_url


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", help="apply Alembic migrations")
    up.add_argument("--url", help="database URL (default: DATABASE_URL)")
    up.set_defaults(run=db_upgrade)

    check_cmd = sub.add_parser("check", help="validate settings and reach every dependency")
    check_cmd.set_defaults(run=check)


def db_upgrade(args: argparse.Namespace) -> int:
    from pipeline.db.migrate import upgrade
    from pipeline.settings import get_settings

    url = args.url or get_settings().database_url
    upgrade(url)
    print(f"database at {safe_url(url)} is at the latest revision")
    return 0


def check(args: argparse.Namespace) -> int:
    """Validate settings and reach Redis, the broker and the database."""
    import redis
    import sqlalchemy

    from pipeline.db.engine import engine_for
    from pipeline.settings import get_settings

    settings = get_settings()
    failures = 0
    for name, url in (("redis", settings.redis_url), ("broker", settings.broker_url)):
        if url.startswith("memory://"):
            print(f"ok    {name} {url} (in-process)")
            continue
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
            print(f"ok    {name} {safe_url(url)}")
        except redis.RedisError as exc:
            failures += 1
            print(f"FAIL  {name} {safe_url(url)}: {type(exc).__name__}")
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        print(f"ok    database {safe_url(settings.database_url)}")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        failures += 1
        print(f"FAIL  database {safe_url(settings.database_url)}: {type(exc).__name__}")
    return EXIT_UNAVAILABLE if failures else 0
