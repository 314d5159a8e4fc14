"""Operations: `pipeline check`, `pipeline db upgrade`, `pipeline reconcile`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.cli.common import EXIT_UNAVAILABLE, safe_url, tenant_id


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", help="apply Alembic migrations")
    up.add_argument("--url", help="database URL (default: DATABASE_URL)")
    up.set_defaults(run=db_upgrade)

    check_cmd = sub.add_parser("check", help="validate settings and reach every dependency")
    check_cmd.set_defaults(run=check)

    rec = sub.add_parser(
        "reconcile",
        help="one reconciler pass now: re-drive lost work, close finished runs, hand off stages",
    )
    rec.add_argument("--tenant", type=tenant_id, help="only this tenant's runs")
    rec.add_argument("--json", action="store_true", help="print the report as JSON")
    rec.set_defaults(run=reconcile)


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


def reconcile(args: argparse.Namespace) -> int:
    """What beat does every RECONCILE_INTERVAL_S, by hand (e.g. after an outage)."""
    from pipeline.logs import configure_logging
    from pipeline.settings import get_settings
    from tasks.maintenance import reconciler

    configure_logging("WARNING", json=get_settings().log_json)  # stderr: stdout is the report
    report = reconciler().run(tenant_id=args.tenant)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    elif report.skipped:
        print("another reconciler pass is running; nothing done")
    else:
        redriven = ", ".join(f"{k} {n}" for k, n in sorted(report.redriven.items())) or "none"
        print(f"resets found: {', '.join(report.resets) or 'none'}")
        print(f"re-driven: {redriven}")
        print(f"dead-lettered as stalled: {report.stalled}")
        print(f"runs closed: {report.runs_closed}; stage hand-offs made good: {report.handoffs}")
    return 0
