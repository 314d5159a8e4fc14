"""`pipeline credentials set|list|delete|rotate`: the tenants' vendor credentials.

A secret value need not appear on the command line, where shell history and `ps` keep it:
`--field NAME=@-` reads the value from stdin (prompting without echo on a terminal),
`--field NAME=@env:VAR` from an environment variable, and `@@...` stands for a literal
value that begins with `@`. Nothing here prints a value, and no message quotes one.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import EXIT_OK, tenant_id
from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.credentials import CredentialSummary

STDIN = "@-"
ENV_PREFIX = "@env:"


def register(sub: Any) -> None:
    group = sub.add_parser("credentials", help="tenants' vendor credentials (encrypted)")
    commands = group.add_subparsers(dest="credentials_cmd", required=True)

    put = commands.add_parser("set", help="store a tenant's credential for a vendor")
    put.add_argument("--tenant", type=tenant_id, required=True)
    put.add_argument("--vendor", required=True, help="e.g. crm, erp")
    put.add_argument(
        "--field",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="one field of the secret; VALUE may be @- (stdin) or @env:VAR; repeat per field",
    )
    put.set_defaults(run=set_command)

    show = commands.add_parser("list", help="credentials with field names and status, masked")
    show.add_argument("--tenant", type=tenant_id)
    show.set_defaults(run=list_command)

    forget = commands.add_parser("delete", help="forget a tenant's credential for a vendor")
    forget.add_argument("--tenant", type=tenant_id, required=True)
    forget.add_argument("--vendor", required=True)
    forget.set_defaults(run=delete_command)

    rotate = commands.add_parser(
        "rotate", help="re-encrypt every credential with the first key of PIPELINE_SECRET_KEY"
    )
    rotate.set_defaults(run=rotate_command)


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


def set_command(args: argparse.Namespace) -> int:
    from pipeline.credentials import put_credential

    secret = parse_fields(args.field)
    credential_id = put_credential(args.tenant, args.vendor, secret)
    print(
        f"stored credential {credential_id} for tenant {args.tenant}, vendor {args.vendor} "
        f"(fields: {', '.join(secret)}); status active"
    )
    return EXIT_OK


def list_command(args: argparse.Namespace) -> int:
    from pipeline.credentials import list_credentials

    for line in credential_lines(list_credentials(args.tenant)):
        print(line)
    return EXIT_OK


def delete_command(args: argparse.Namespace) -> int:
    from pipeline.credentials import delete_credential

    delete_credential(args.tenant, args.vendor)
    print(f"deleted the credential for tenant {args.tenant}, vendor {args.vendor}")
    return EXIT_OK


def rotate_command(args: argparse.Namespace) -> int:
    from pipeline.credentials import rotate_credentials

    count = rotate_credentials()
    print(f"re-encrypted {count} credentials with the first key of PIPELINE_SECRET_KEY")
    return EXIT_OK
