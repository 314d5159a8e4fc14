"""`pipeline apikeys create|list|revoke`: keys for the web API.

`create` prints the key once — only its hash is kept, so it cannot be shown again; `list`
shows each key's prefix, scope and state, never a key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pipeline.cli.common import EXIT_OK, TENANT, example


@click.group(epilog=example('pipeline apikeys create --tenant 7 --name "web app"'))
def apikeys() -> None:
    """Keys for the web API (stored hashed)."""


@apikeys.command(
    epilog=example(
        'pipeline apikeys create --tenant 7 --name "web app"',
        "pipeline apikeys create --admin --name ops",
    )
)
@click.option("--tenant", type=TENANT, help="A key that acts on this tenant only.")
@click.option("--admin", is_flag=True, help="A key that acts on every tenant.")
@click.option("--name", default="", help="What the key is for (shown by list).")
def create(tenant: int | None, admin: bool, name: str) -> int:
    """Make a key; it is printed once, alone on stdout (KEY=$(pipeline apikeys create
    ...)), what it is on stderr. Give exactly one of --tenant or --admin."""
    from pipeline.api_keys import create_api_key

    if (tenant is None) == (not admin):
        raise click.UsageError("give exactly one of --tenant or --admin")
    key, summary = create_api_key(tenant_id=tenant, admin=admin, name=name)
    click.echo(key)
    click.echo(
        f"API key {summary.id} ({summary.prefix}…, {summary.scope}) created; "
        "it is shown only this once — keep it now",
        err=True,
    )
    return EXIT_OK


@apikeys.command("list", epilog=example("pipeline apikeys list --tenant 7"))
@click.option("--tenant", type=TENANT, help="Only this tenant's keys.")
def list_keys(tenant: int | None) -> int:
    """Keys: id, prefix, scope, state, created, name — never a key."""
    from pipeline.api_keys import list_api_keys

    keys = list_api_keys(tenant)
    if not keys:
        click.echo("no API keys")
        return EXIT_OK
    rows = [("id", "prefix", "scope", "state", "created", "name")]
    for key in keys:
        state = f"revoked {_utc(key.revoked_at)}" if key.revoked_at else "active"
        rows.append((str(key.id), key.prefix, key.scope, state, _utc(key.created_at), key.name))
    widths = [*(max(len(row[col]) for row in rows) for col in range(5)), 0]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _utc(at: datetime) -> str:
    """Postgres hands times back in the session's zone, SQLite without one: show UTC."""
    return f"{at.astimezone(UTC) if at.tzinfo else at:%Y-%m-%d %H:%M} UTC"


@apikeys.command(epilog=example("pipeline apikeys revoke 12"))
@click.argument("key_id", metavar="KEY_ID", type=click.IntRange(1, 2**63 - 1))
def revoke(key_id: int) -> int:
    """Revoke a key (the id `list` shows) at once; the API refuses it within
    API_KEY_CACHE_S."""
    from pipeline.api_keys import revoke_api_key

    summary = revoke_api_key(key_id)
    click.echo(f"API key {summary.id} ({summary.prefix}…, {summary.scope}) is revoked")
    return EXIT_OK
