"""Vendors misbehaving for one tenant (the other tenant of the scenario is the control): all of
its vendors down for a whole run and then back (the deferred work must heal), a storm of 429s
with Retry-After, and write answers that hang past the read timeout after the write was done.
"""

from __future__ import annotations

import time
from collections import Counter

from chaos.measure import Measurement
from chaos.processes import say
from chaos.trial import Scenario, Trial

DOWN_VENDORS = ("apify_linkedin", "zerobounce", "crm", "erp")
STORM_VENDORS = ("crawler", "crm")
STORM_S = 10.0
STORM_SHARE = 0.5
RETRY_AFTER_S = 1.0
HANG_S = 2.5  # beyond HTTP_READ_TIMEOUT_S: the client gives up, the vendor did the work
HANG_SHARE = {"crm": 0.3, "erp": 0.05}
DOWN_RUN_S = 180.0


def clear(trial: Trial, tenant: int, vendors: tuple[str, ...]) -> None:
    """A fault with no effect replaces each of the tenant's faults: the vendor is back."""
    for vendor in vendors:
        trial.admin.set_fault(vendor=vendor, tenant=tenant)


# -- vendors down for a whole run, then back -------------------------------------------------


def take_vendors_down(trial: Trial) -> None:
    for vendor in DOWN_VENDORS:
        trial.admin.set_fault(vendor=vendor, tenant=trial.tenants[0], down=True, status=503)


def bring_vendors_back(trial: Trial) -> None:
    """Down until the tenant's whole pipeline has closed, then back up."""
    tenant = trial.tenants[0]
    pipeline = trial.pipeline_of(tenant)
    deadline = time.monotonic() + DOWN_RUN_S
    while not pipeline.closed() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not pipeline.closed():
        trial.fail(f"the pipeline of tenant {tenant} did not close while its vendors were down")
    deferrals = pipeline.deferrals() or Counter()
    trial.marks["deferred_while_down"] = sum(deferrals.values())
    clear(trial, tenant, DOWN_VENDORS)
    say(f"vendors of tenant {tenant} back up")


def check_healed(trial: Trial, m: Measurement) -> None:
    tenant = trial.tenants[0]
    deferred = sum((trial.pipeline_of(tenant).deferrals() or Counter()).values())
    if not deferred:
        trial.fail("nothing was deferred while the tenant's vendors were down")
    while_down = trial.marks.get("deferred_while_down", 0)
    trial.note(f"deferrals: {while_down} while down, {deferred} in all")
    crm = len(trial.admin.crm_contacts(tenant))
    erp = len(trial.admin.erp_partners(tenant))
    trial.note(f"after healing: crm contacts {crm}, erp partners {erp}/{trial.companies}")


# -- a 429 storm ------------------------------------------------------------------------------


def start_storm(trial: Trial) -> None:
    for vendor in STORM_VENDORS:
        trial.admin.set_fault(
            vendor=vendor,
            tenant=trial.tenants[0],
            status=429,
            retry_after=RETRY_AFTER_S,
            error_rate=STORM_SHARE,
        )


def end_storm(trial: Trial) -> None:
    time.sleep(STORM_S)  # the storm's length is the scenario
    clear(trial, trial.tenants[0], STORM_VENDORS)
    say("the 429 storm is over")


def check_storm(trial: Trial, m: Measurement) -> None:
    stormed, calm = trial.tenants[0], trial.tenants[1]
    for vendor in STORM_VENDORS:
        kind = "enrichment" if vendor == "crawler" else "crm_sync"
        per_item = []
        for tenant in (stormed, calm):
            progress = trial.pipeline_of(tenant).kind_progress(kind)
            items = progress[1] if progress else 0
            calls = trial.calls(vendor, [tenant])
            per_item.append(f"{calls / items:.2f}" if items else "-")
        trial.note(f"{vendor} calls/item {per_item[0]} (calm tenant {per_item[1]})")


# -- hung write answers -----------------------------------------------------------------------


def hang_writes(trial: Trial) -> None:
    for vendor, share in HANG_SHARE.items():
        trial.admin.set_fault(
            vendor=vendor, tenant=trial.tenants[0], hang_s=HANG_S, error_rate=share
        )


def check_hung(trial: Trial, m: Measurement) -> None:
    tenant = trial.tenants[0]
    hung = {vendor: trial.errors(vendor, [tenant]) for vendor in HANG_SHARE}
    trial.note("hung answers " + ", ".join(f"{v} {n}" for v, n in hung.items()))


VENDORS_DOWN_HEAL = Scenario(
    "vendors-down-heal",
    "one tenant's contact, verification, CRM and ERP vendors down for a whole run, then back",
    bring_vendors_back,
    prepare=take_vendors_down,
    check=check_healed,
)
RATE_LIMIT_STORM = Scenario(
    "429-storm",
    f"crawler and CRM answer half of one tenant's calls 429 for {STORM_S:.0f}s",
    end_storm,
    prepare=start_storm,
    check=check_storm,
)
HUNG_WRITES = Scenario(
    "hung-writes",
    f"CRM and ERP writes done but answered after {HANG_S}s (read timeout 1s)",
    lambda trial: None,
    prepare=hang_writes,
    check=check_hung,
)
