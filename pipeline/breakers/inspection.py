"""Reading breakers without touching them: what operators and the API see.

Nothing here admits a call, counts an outcome or moves a state; forcing a state stays with
the breaker (`breaker_for(t, v).open()` / `.close()`), so a forced transition is announced
to the log and `breaker_events` like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.breakers import BreakerFactory, factory
from pipeline.breakers.contract import CLOSED, HALF_OPEN, OPEN
from pipeline.breakers.listing import list_breakers
from pipeline.breakers.storage import StoredBreaker, read_breakers


@dataclass(frozen=True)
class BreakerSnapshot:
    """One (tenant, vendor) breaker as it stands. `opened_at` is when it last opened (None
    while closed); `next_probe_at` is when an open breaker lets a probe through (None when
    closed, or half-open: probing now)."""

    tenant_id: int
    vendor: str
    state: str
    failures: int
    opened_at: datetime | None
    next_probe_at: datetime | None


@dataclass(frozen=True)
class VendorBreakers:
    """How one vendor's breakers stand across every tenant that has one stored."""

    breakers: int
    open: int
    half_open: int

    def healthy(self, open_share: float) -> bool:
        """Healthy unless at least `open_share` of its breakers are open or probing: one
        tenant's broken account does not make a vendor unhealthy for everyone."""
        return not self.breakers or (self.open + self.half_open) / self.breakers < open_share


def inspect_breakers(
    tenant_id: int | None = None,
    *,
    vendors: Sequence[str],
    breakers: BreakerFactory | None = None,
) -> list[BreakerSnapshot]:
    """With `tenant_id`: that tenant's breaker of each of `vendors` (closed when never
    written). Without: every stored breaker of those vendors, all tenants (found by SCAN).
    Raises `redis.RedisError` when Redis cannot be read."""
    made = breakers or factory()
    if tenant_id is not None:
        pairs = [(tenant_id, vendor) for vendor in vendors]
    elif made.client is None:
        pairs = sorted(p for p in made.memory_pairs() if p[1] in vendors)
    else:  # the one SCAN reader, which brings each breaker's fields with it
        listed = list_breakers(made.client, made.settings.redis_key_prefix)
        return [
            _snapshot(made, b.tenant_id, b.vendor, StoredBreaker(b.state, b.failures, b.opened_at))
            for b in sorted(listed, key=lambda b: (b.tenant_id, b.vendor))
            if b.vendor in vendors
        ]
    return [
        _snapshot(made, tenant, vendor, stored)
        for (tenant, vendor), stored in zip(pairs, _read(made, pairs), strict=True)
    ]


def vendor_breakers(
    *, vendors: Sequence[str], breakers: BreakerFactory | None = None
) -> dict[str, VendorBreakers]:
    """Per vendor, how many tenants' breakers are stored, open and half-open."""
    snapshots = inspect_breakers(vendors=vendors, breakers=breakers)
    return {
        vendor: VendorBreakers(
            breakers=sum(1 for s in snapshots if s.vendor == vendor),
            open=sum(1 for s in snapshots if s.vendor == vendor and s.state == OPEN),
            half_open=sum(1 for s in snapshots if s.vendor == vendor and s.state == HALF_OPEN),
        )
        for vendor in vendors
    }


def _read(made: BreakerFactory, pairs: list[tuple[int, str]]) -> list[StoredBreaker]:
    if made.client is not None:
        return read_breakers(made.client, made.settings.redis_key_prefix, pairs)
    stores = [made.storage(tenant, vendor) for tenant, vendor in pairs]
    return [StoredBreaker(s.state, s.counter, s.opened_at) for s in stores]


def _snapshot(
    made: BreakerFactory, tenant_id: int, vendor: str, stored: StoredBreaker
) -> BreakerSnapshot:
    opened_at = stored.changed_at if stored.state != CLOSED else None
    next_probe_at = None
    if stored.state == OPEN and opened_at is not None:
        cool_off = made.settings.breaker_config(vendor).cool_off_s
        next_probe_at = opened_at + timedelta(seconds=cool_off)
    return BreakerSnapshot(
        tenant_id=tenant_id,
        vendor=vendor,
        state=stored.state,
        failures=stored.failures,
        opened_at=opened_at,
        next_probe_at=next_probe_at,
    )
