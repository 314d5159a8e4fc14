"""`pipeline simulator [--port N]`: the vendor simulator in the foreground, and
`pipeline simulator fault set|clear|list`: its faults, set over its admin API (loopback).

The fault commands talk to a simulator already running, at `--url` (default:
VENDOR_BASE_URL, where the product looks for its vendors).
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from pipeline.cli.common import EXIT_OK, TENANT, example
from pipeline.cli.simulator_accounts import register
from pipeline.cli.simulator_admin import call_simulator, url_option
from pipeline.errors import DependencyUnavailableError, InputError

VENDOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@click.group(
    invoke_without_command=True,
    short_help="Run the vendor simulator; set its faults.",
    epilog=example(
        "pipeline simulator            # on VENDOR_BASE_URL's port",
        "pipeline simulator fault set --vendor crm --tenant 7 --down",
    ),
)
@click.option(
    "--port",
    metavar="PORT",
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port; default: VENDOR_BASE_URL's, where the "
    "workers look for their vendors).",
)
@click.option(
    "--seed", metavar="N", type=int, default=0, show_default=True, help="Seed of the fault draws."
)
@click.option(
    "--host",
    metavar="ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.pass_context
def simulator(ctx: click.Context, port: int | None, seed: int, host: str) -> int:
    """Run the vendor simulator (every vendor on one port) until interrupted; with a
    subcommand, set the faults of one that runs or register a tenant's accounts there."""
    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    from pipeline.simulator import serve

    if port is None:
        from urllib.parse import urlsplit

        from pipeline.settings import get_settings

        port = urlsplit(get_settings().vendor_base_url).port or 8700
    try:
        serve(port, seed, host=host)
    except OSError as exc:  # the port taken, or an address this machine does not have
        message = f"cannot listen on port {port} ({exc.strerror}): stop what holds it, or pass "
        raise DependencyUnavailableError(message + "another --port") from None
    return EXIT_OK


@simulator.group(
    epilog=example(
        "pipeline simulator fault set --vendor apify_linkedin --tenant 7 --status 503",
        "pipeline simulator fault list",
        "pipeline simulator fault clear --vendor apify_linkedin --tenant 7",
    )
)
def fault() -> None:
    """Faults of a running simulator: one per vendor and tenant (or all tenants)."""


@fault.command(
    "set",
    epilog=example(
        "pipeline simulator fault set --vendor crm --tenant 7 --down",
        "pipeline simulator fault set --vendor search --error-rate 0.3",
        "pipeline simulator fault set --vendor crm --status 429 --retry-after 2 --times 5",
        "pipeline simulator fault set --vendor apify_linkedin --tenant 7 --down --for 120",
    ),
)
@click.option(
    "--vendor",
    metavar="VENDOR",
    required=True,
    help="The vendor it strikes, e.g. crawler, search, apify_linkedin, crm, erp.",
)
@click.option("--tenant", type=TENANT, help="Only this tenant's calls (default: every tenant's).")
@click.option("--down", is_flag=True, help="Every call fails (503 unless --status).")
@click.option(
    "--status",
    metavar="CODE",
    type=click.IntRange(100, 599),
    help="The status a failing call gets.",
)
@click.option(
    "--error-rate",
    metavar="SHARE",
    type=click.FloatRange(0, 1),
    help="Share of calls that fail (seeded).",
)
@click.option(
    "--retry-after",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    help="Retry-After seconds on failures.",
)
@click.option(
    "--latency-ms", metavar="MS", type=click.IntRange(min=0), default=0, help="Added to every call."
)
@click.option(
    "--hang-s",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=0.0,
    help="A failing call hangs.",
)
@click.option("--drop", is_flag=True, help="A failing call's connection is cut.")
@click.option(
    "--rate-limit-per-s",
    metavar="PER_S",
    type=click.FloatRange(min=0, min_open=True),
    help="Calls beyond this many per second get 429.",
)
@click.option(
    "--times", metavar="N", type=click.IntRange(min=1), help="Strike this many calls, then retire."
)
@click.option(
    "--skip",
    metavar="N",
    type=click.IntRange(min=0),
    default=0,
    help="Let this many calls through first.",
)
@click.option(
    "--for",
    "for_s",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    help="Active for this many seconds from now only (an outage window).",
)
@url_option
def set_fault(
    url: str | None, vendor: str, tenant: int | None, for_s: float | None, **fields: Any
) -> int:
    """Put a fault in force, replacing any for the same vendor and tenant."""
    from pipeline.simulator import Fault, Outage

    if not VENDOR_NAME.match(vendor):
        raise InputError("--vendor: a vendor name is lower-case letters, digits and _")
    outage = Outage(start=time.time(), end=time.time() + for_s) if for_s else None
    chosen = {name: value for name, value in fields.items() if value is not None}
    fault = Fault(vendor=vendor, tenant=tenant, outage=outage, **chosen)
    call_simulator(url, lambda admin: admin.set_fault(fault))
    click.echo(f"fault set: {_describe(fault.model_dump(mode='json'))}")
    return EXIT_OK


@fault.command(
    "clear",
    epilog=example(
        "pipeline simulator fault clear --vendor crm --tenant 7",
        "pipeline simulator fault clear --all",
    ),
)
@click.option("--vendor", metavar="VENDOR", help="The vendor whose fault to clear.")
@click.option("--tenant", type=TENANT, help="The tenant it was set for (default: all tenants').")
@click.option("--all", "every", is_flag=True, help="Clear every fault.")
@url_option
def clear_fault(url: str | None, vendor: str | None, tenant: int | None, every: bool) -> int:
    """Clear one fault (--vendor, and --tenant if it was set for one), or --all."""
    if every == (vendor is not None):
        raise click.UsageError("give --vendor (with --tenant if set for one) or --all")
    if every:
        call_simulator(url, lambda admin: admin.clear_faults())
        click.echo("every fault cleared")
        return EXIT_OK
    assert vendor is not None
    whose = f"tenant {tenant}" if tenant is not None else "all tenants"
    if not call_simulator(url, lambda admin: admin.clear_fault(vendor, tenant)):
        raise InputError(f"no fault is set for that vendor and {whose} (`fault list` shows them)")
    click.echo(f"fault cleared: vendor {vendor}, {whose}")
    return EXIT_OK


@fault.command("list", epilog=example("pipeline simulator fault list --url http://127.0.0.1:8700"))
@url_option
def list_faults(url: str | None) -> int:
    """The faults in force, one a line."""
    faults = call_simulator(url, lambda admin: admin.faults())
    for item in faults:
        click.echo(_describe(item.model_dump(mode="json")))
    if not faults:
        click.echo("no faults")
    return EXIT_OK


def _describe(fault: dict[str, Any]) -> str:
    """`vendor crm, tenant 7: down=true status=503`: what differs from a harmless fault."""
    from pipeline.simulator import Fault

    plain = Fault(vendor=fault["vendor"]).model_dump(mode="json")
    whose = f"tenant {fault['tenant']}" if fault.get("tenant") is not None else "all tenants"
    shown = " ".join(
        f"{name}={value}"
        for name, value in fault.items()
        if name not in ("vendor", "tenant") and value != plain.get(name)
    )
    return f"vendor {fault['vendor']}, {whose}: {shown or '(no effect)'}"


simulator.add_command(register)
