"""`/breakers`: each (tenant, vendor) circuit breaker — look, reset, force open.

Forcing goes through the breaker itself, so the transition is logged and written to
`breaker_events` like any other. A breaker forced open rejects calls for its vendor's
cool-off (`CB_COOL_OFF_S` or its override), then lets a probe through as usual; reset
closes it with no failures counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from pipeline.api.auth import AnyCaller, Caller
from pipeline.api.inputs import TenantPath, TenantQuery, VendorPath
from pipeline.api.responses import keyed
from pipeline.breakers import breaker_for
from pipeline.breakers.contract import CLOSED, OPEN
from pipeline.breakers.inspection import inspect_breakers
from pipeline.errors import NotFoundError
from pipeline.vendors.registry import GUARDED_VENDORS

router = APIRouter(prefix="/breakers", tags=["breakers"], responses=keyed(404, 422))

State = Literal["closed", "open", "half-open"]


class BreakerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tenant_id: int
    vendor: str
    state: State
    failures: int
    opened_at: datetime | None
    next_probe_at: datetime | None


class BreakerList(BaseModel):
    breakers: list[BreakerOut]


@router.get("", response_model=BreakerList)
def list_breakers(
    caller: AnyCaller,
    tenant: TenantQuery = None,
    state: State | None = None,
) -> BreakerList:
    """With `tenant` (or a tenant key): that tenant's breaker of every guarded vendor,
    closed ones included. An admin key without `tenant`: every breaker with stored state,
    all tenants (e.g. `?state=open` for what is broken now)."""
    found = inspect_breakers(caller.tenant_scope(tenant), vendors=GUARDED_VENDORS)
    return BreakerList(
        breakers=[BreakerOut.model_validate(b) for b in found if state in (None, b.state)]
    )


@router.post("/{tenant}/{vendor}/reset", response_model=BreakerOut)
def reset_breaker(tenant: TenantPath, vendor: VendorPath, caller: AnyCaller) -> BreakerOut:
    """Close the breaker now, failures forgotten."""
    return _force(caller, tenant, vendor, CLOSED)


@router.post("/{tenant}/{vendor}/open", response_model=BreakerOut)
def open_breaker(tenant: TenantPath, vendor: VendorPath, caller: AnyCaller) -> BreakerOut:
    """Open the breaker now (vendor maintenance): no call for the cool-off, then probes."""
    return _force(caller, tenant, vendor, OPEN)


def _force(caller: Caller, tenant: int, vendor: str, state: str) -> BreakerOut:
    scoped = caller.tenant_scope(tenant)
    assert scoped is not None
    if vendor not in GUARDED_VENDORS:
        raise NotFoundError(
            f"no breaker for this vendor; vendors with breakers: {', '.join(GUARDED_VENDORS)}",
            details={"field": "path.vendor"},
        )
    breaker = breaker_for(scoped, vendor)
    if state == OPEN:
        breaker.open()
    else:
        breaker.close()
    (snapshot,) = inspect_breakers(scoped, vendors=[vendor])
    return BreakerOut.model_validate(snapshot)
