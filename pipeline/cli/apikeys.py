"""`pipeline apikeys create|list|revoke`: keys for the web API.

`create` prints the key once — only its hash is kept, so it cannot be shown again; `list`
shows each key's prefix, scope and state, never a key.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from pipeline.cli.common import EXIT_OK, tenant_id


def register(sub: Any) -> None:
    group = sub.add_parser("apikeys", help="keys for the web API (stored hashed)")
    commands = group.add_subparsers(dest="apikeys_cmd", required=True)

    create = commands.add_parser("create", help="make a key; it is printed once")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--tenant", type=tenant_id, help="a key that acts on this tenant only")
    scope.add_argument("--admin", action="store_true", help="a key that acts on every tenant")
    create.add_argument("--name", default="", help="what the key is for (shown by list)")
    create.set_defaults(run=create_command)

    show = commands.add_parser("list", help="keys: id, prefix, scope, state — never a key")
    show.add_argument("--tenant", type=tenant_id)
    show.set_defaults(run=list_command)

    revoke = commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", type=int, help="the id `list` shows")
    revoke.set_defaults(run=revoke_command)


def create_command(args: argparse.Namespace) -> int:
    from pipeline.api_keys import create_api_key

    key, summary = create_api_key(tenant_id=args.tenant, admin=args.admin, name=args.name)
    print(key)
    print(
        f"API key {summary.id} ({summary.prefix}…, {summary.scope}) created; "
        "it is shown only this once — keep it now",
        flush=True,
    )
    return EXIT_OK


def list_command(args: argparse.Namespace) -> int:
    from pipeline.api_keys import list_api_keys

    keys = list_api_keys(args.tenant)
    if not keys:
        print("no API keys")
        return EXIT_OK
    rows = [("id", "prefix", "scope", "state", "created", "name")]
    for key in keys:
        state = f"revoked {_utc(key.revoked_at)}" if key.revoked_at else "active"
        created = _utc(key.created_at)
        rows.append((str(key.id), key.prefix, key.scope, state, created, key.name))
    widths = [*(max(len(row[col]) for row in rows) for col in range(5)), 0]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _utc(at: datetime) -> str:
    """Postgres hands times back in the session's zone, SQLite without one: show UTC."""
    return f"{at.astimezone(UTC) if at.tzinfo else at:%Y-%m-%d %H:%M} UTC"


def revoke_command(args: argparse.Namespace) -> int:
    from pipeline.api_keys import revoke_api_key

    summary = revoke_api_key(args.key_id)
    print(f"API key {summary.id} ({summary.prefix}…, {summary.scope}) is revoked")
    return EXIT_OK
