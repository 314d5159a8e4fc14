"""`pipeline simulator register --tenant T`: the simulator's CRM and ERP learn the
tenant's stored credentials.

A real CRM or ERP already knows the client and the user a tenant gave us; the simulator
knows nobody until told. Reading what `pipeline credentials set` stored (rather than
taking secrets as options) keeps them out of shell history and makes the two agree.
"""

from __future__ import annotations

import click

from pipeline.cli.common import EXIT_OK, TENANT, example
from pipeline.cli.simulator_admin import call_simulator, url_option
from pipeline.errors import InputError


@click.command(
    epilog=example(
        "pipeline credentials set --tenant 7 --vendor crm --field client_id=acme "
        "--field client_secret=@-",
        "pipeline simulator register --tenant 7",
    )
)
@click.option("--tenant", type=TENANT, required=True, help="The tenant whose accounts to add.")
@url_option
def register(tenant: int, url: str | None) -> int:
    """Make a running simulator accept the tenant's stored CRM client and ERP user."""
    from pipeline.credentials import get_credential

    registered = []
    for vendor in ("crm", "erp"):
        try:
            secret = get_credential(tenant, vendor).secret
        except InputError:
            continue  # none stored for this vendor: nothing to register
        needed = ("client_id", "client_secret") if vendor == "crm" else ("db", "login", "password")
        missing = [field for field in needed if not secret.get(field)]
        if missing:
            raise InputError(
                f"tenant {tenant}'s {vendor} credential has no {', '.join(missing)}: "
                "`pipeline credentials set` it again"
            )
        if vendor == "crm":
            call_simulator(
                url,
                lambda admin, s=secret: admin.register_crm_client(
                    tenant, s["client_id"], s["client_secret"]
                ),
            )
            registered.append("CRM client")
        else:
            call_simulator(
                url,
                lambda admin, s=secret: admin.register_erp_user(
                    tenant, s["db"], s["login"], s["password"]
                ),
            )
            registered.append("ERP user")
    if not registered:
        raise InputError(
            f"tenant {tenant} has no crm or erp credential stored: `pipeline credentials set` first"
        )
    click.echo(f"the simulator accepts tenant {tenant}'s {' and '.join(registered)}")
    return EXIT_OK
