"""`pipeline credentials set|list|delete|rotate`: the tenants' vendor credentials.

A secret value need not appear on the command line, where shell history and `ps` keep it:
`--field NAME=@-` reads the value from stdin (prompting without echo on a terminal),
`--field NAME=@env:VAR` from an environment variable, and `@@...` stands for a literal
value that begins with `@`. Nothing here prints a value, and no message quotes one.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import EXIT_OK, TENANT, example
from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.credentials import CredentialSummary

STDIN = "@-"
ENV_PREFIX = "@env:"


def read_secret_from_stdin(name: str) -> str:
    """A value from stdin: a no-echo prompt on a terminal, else all of stdin less the
    trailing newline that `echo` and here-strings add."""
    if sys.stdin.isatty():
        return getpass.getpass(f"{name}: ")
    return sys.stdin.read().rstrip("\r\n")


def parse_fields(
    specs: Sequence[str],
    *,
    read_stdin: Callable[[str], str] = read_secret_from_stdin,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """`NAME=VALUE` arguments as a secret, each VALUE resolved from where it points.

    Raises `InputError` naming the field (or its position, when it has no name), never
    quoting what was given: a mistyped argument may be the secret itself.
    """
    secret: dict[str, str] = {}
    stdin_used_by: str | None = None
    for position, spec in enumerate(specs, start=1):
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--field number {position} is not NAME=VALUE")
        if name in secret:
            raise InputError(f"--field {name} is given twice")
        if value == STDIN:
            if stdin_used_by is not None:
                raise InputError(
                    f"--field {name}: stdin is already read for {stdin_used_by} "
                    "(only one field can be @-; use @env:VAR for the others)"
                )
            stdin_used_by = name
            value = read_stdin(name)
        elif value.startswith(ENV_PREFIX):
            variable = value.removeprefix(ENV_PREFIX)
            if not variable or variable not in environ:
                raise InputError(f"--field {name}: environment variable {variable!r} is not set")
            value = environ[variable]
        elif value.startswith("@@"):
            value = value[1:]
        elif value.startswith("@"):
            raise InputError(
                f"--field {name}: a value starting with @ must be @- (stdin), @env:VAR, "
                "or @@... for a literal @"
            )
        secret[name] = value
    return secret


def credential_lines(summaries: Sequence[CredentialSummary]) -> list[str]:
    """The credentials as aligned text: tenant, vendor, status, field names, attention."""
    if not summaries:
        return ["no credentials"]
    rows = [("tenant", "vendor", "status", "fields", "attention")]
    for item in summaries:
        fields = (
            ", ".join(item.fields)
            if item.fields is not None
            else "(cannot decrypt: its key is not in PIPELINE_SECRET_KEY)"
        )
        attention = (
            f"{_utc(item.attention_at):%Y-%m-%d %H:%M:%S} UTC {item.attention_reason}"
            if item.attention_at is not None
            else ""
        )
        rows.append((str(item.tenant_id), item.vendor, item.status, fields, attention))
    # the last column runs to the end of the line
    widths = [*(max(len(row[col]) for row in rows) for col in range(4)), 0]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _utc(at: datetime) -> datetime:
    """Postgres hands times back in the session's zone, SQLite without one: show UTC."""
    return at.astimezone(UTC) if at.tzinfo is not None else at


@click.group(
    short_help="Tenants' vendor credentials (encrypted).",
    epilog=example("pipeline credentials list --tenant 7"),
)
def credentials() -> None:
    """Tenants' vendor credentials (encrypted with PIPELINE_SECRET_KEY)."""


@credentials.command(
    "set",
    epilog=example(
        "pipeline credentials set --tenant 7 --vendor crm \\",
        "    --field client_id=acme --field client_secret=@-",
        "pipeline credentials set --tenant 7 --vendor erp \\",
        "    --field db=odoo_7 --field login=admin --field password=@env:ERP_PASSWORD",
    ),
)
@click.option("--tenant", type=TENANT, required=True, help="The tenant it belongs to.")
@click.option(
    "--vendor", metavar="VENDOR", required=True, help="The vendor it is for, e.g. crm, erp."
)
@click.option(
    "--field",
    "fields",
    multiple=True,
    required=True,
    metavar="NAME=VALUE",
    help="One field of the secret; VALUE may be @- (stdin) or @env:VAR. Repeat per field.",
)
def set_command(tenant: int, vendor: str, fields: tuple[str, ...]) -> int:
    """Store a tenant's credential for a vendor (replacing any); prints field names only."""
    from pipeline.credentials import put_credential

    secret = parse_fields(fields)
    credential_id = put_credential(tenant, vendor, secret)
    click.echo(
        f"stored credential {credential_id} for tenant {tenant}, vendor {vendor} "
        f"(fields: {', '.join(secret)}); status active"
    )
    return EXIT_OK


@credentials.command("list", epilog=example("pipeline credentials list --tenant 7"))
@click.option("--tenant", type=TENANT, help="Only this tenant's credentials.")
def list_command(tenant: int | None) -> int:
    """Credentials with their field names and status — never a value."""
    from pipeline.credentials import list_credentials

    for line in credential_lines(list_credentials(tenant)):
        click.echo(line)
    return EXIT_OK


@credentials.command(
    "delete", epilog=example("pipeline credentials delete --tenant 7 --vendor crm")
)
@click.option("--tenant", type=TENANT, required=True, help="The tenant it belongs to.")
@click.option("--vendor", metavar="VENDOR", required=True, help="The vendor it is for.")
def delete_command(tenant: int, vendor: str) -> int:
    """Forget a tenant's credential for a vendor."""
    from pipeline.credentials import delete_credential

    delete_credential(tenant, vendor)
    click.echo(f"deleted the credential for tenant {tenant}, vendor {vendor}")
    return EXIT_OK


@credentials.command("rotate", epilog=example("pipeline credentials rotate"))
def rotate_command() -> int:
    """Re-encrypt every credential with the first key of PIPELINE_SECRET_KEY (all or
    nothing); put the new key first, keep the old ones after it until this has run."""
    from pipeline.credentials import rotate_credentials

    count = rotate_credentials()
    click.echo(f"re-encrypted {count} credentials with the first key of PIPELINE_SECRET_KEY")
    return EXIT_OK
