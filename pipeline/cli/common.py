"""What the CLI commands share: exit codes, parameter types, printing URLs safely.

Parameter types fail with Click's usage error (exit code 2) and a message naming the
option; none quotes what was typed (it may be long, or a secret typed in the wrong place).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from pipeline.errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
MAX_TENANT_ID = 2**63 - 1  # the tenant columns are BIGINT
WORKER_COMMAND = "celery -A workers.app worker --queues critical,default,export"


def example(*lines: str) -> str:
    """A help epilog with example command lines (`\b`: Click keeps them as written)."""
    return ("\b\nExamples:\n" if len(lines) > 1 else "\b\nExample:\n") + "\n".join(
        f"  {line}" for line in lines
    )


class TenantId(click.ParamType):
    """A positive integer tenant id (tenant columns are BIGINT)."""

    name = "TENANT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            tenant = value
        elif isinstance(value, str) and value.isascii() and value.strip().isdigit():
            tenant = int(value)
        else:
            tenant = 0
        if not 0 < tenant <= MAX_TENANT_ID:
            self.fail("tenant must be a positive integer", param, ctx)
        return tenant


class Port(click.ParamType):
    name = "PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value)
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
            self.fail("port must be 1-65535", param, ctx)
        return int(text)


class Seconds(click.FloatRange):
    """A time limit: a finite number of seconds over 0 (`nan` passes `x > 0` and never
    compares past a deadline, so it would wait forever; `inf` would too)."""

    name = "SECONDS"

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail("expected a number of seconds over 0", param, ctx)
        return float(seconds)


_AGE = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta | None:
    match = _AGE.match(text.strip())
    if not match:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Age(click.ParamType):
    """`30d`, `12h`, `15m` or `90s`."""

    name = "AGE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        age = parse_age(str(value))
        if age is None:
            self.fail("expected an age like 30d, 12h, 15m or 90s", param, ctx)
        return age


class Since(click.ParamType):
    """A moment: an age back from now (`2h`, `7d`) or an ISO 8601 date or time (UTC if no
    zone is given)."""

    name = "WHEN"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        age = parse_age(text)
        if age is not None:
            return datetime.now(UTC) - age
        try:
            at = datetime.fromisoformat(text) if len(text) <= 40 else None
        except ValueError:
            at = None
        if at is None:
            self.fail("expected an age like 2h or 7d, or a date like 2026-01-31", param, ctx)
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


TENANT = TenantId()
PORT = Port()
SECONDS = Seconds()
AGE = Age()
SINCE = Since()


def made_folder(ctx: click.Context, param: click.Parameter, path: Any) -> Any:
    """An option's folder, made now (with its parents) so a path that cannot be one is a
    usage error before any work starts, naming the option but not the path."""
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot make that folder ({exc.strerror})"
            raise click.BadParameter(message, ctx, param) from None
    return path


def stages_option(value: str) -> list[str]:
    """`crm_sync,export` as a list (checked by the core, which names what it expects);
    an empty name (`--then ,`, `crm_sync,,export`) is a typo, not "no stages"."""
    if not value.strip():
        return []
    stages = [stage.strip() for stage in value.split(",")]
    if not all(stages):
        raise InputError("--then: a comma-separated list of stages such as crm_sync,export")
    return stages


def safe_url(url: str) -> str:
    """A URL fit to print: any password replaced."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def limit_option(what: str) -> Any:
    """`--limit N` (1-1000, default 50) alike on every listing command."""
    return click.option(
        "--limit",
        metavar="N",
        type=click.IntRange(1, 1000),
        default=50,
        show_default=True,
        help=f"At most this many{what}.",
    )
