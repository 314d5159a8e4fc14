"""Faults: what can go wrong with a simulated vendor, and the seeded decision per call.

A `Fault` names one vendor and optionally one tenant. It has two kinds of effect:

- *shaping*, applied to every call while the fault is active: `latency_ms`, `thin` crawls,
  `garbage` (a 200 whose body is not JSON),
  `reject_records` (CRM batch), `erp_reject_fields` (ERP create/write);
- a *strike*, which makes one call fail: answered with `status` (default 503, with
  Retry-After when `retry_after` is set), after `hang_s` seconds, or not at all (`drop`).

Which calls strike: all of them while the vendor is `down` or inside the `outage` window;
with `rate_limit_per_s`, the calls beyond that many in the last second (a vendor enforcing
a rate: status 429 unless another is named; only calls let through count towards it);
otherwise a seeded draw below `error_rate`. A fault with `times` retires after striking
that many calls ("the next two calls fail"); one with `skip` lets that many calls through
first ("the vendor goes down after its 100th call"). A fault that names a failure (`status`,
`hang_s` or `drop`) but no `error_rate` strikes every call; a fault that only shapes never
strikes. Outside its `outage` window a fault is inactive altogether.

Determinism: every call to (vendor, tenant) draws exactly one number from its own stream
`random.Random(f"{seed}:{vendor}:{tenant}")`, fault or no fault, so the same sequence of
calls meets the same sequence of failures in every run and every process. (Concurrent
calls to the *same* vendor and tenant draw in arrival order, which the caller controls.)
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_FAULT_STATUS = 503
RATE_LIMIT_STATUS = 429
RATE_WINDOW_S = 1.0


class Outage(BaseModel):
    """A window [start, end) in epoch seconds, read from the simulator's clock."""

    model_config = ConfigDict(extra="forbid")

    start: float
    end: float

    def covers(self, now: float) -> bool:
        return self.start <= now < self.end


class Fault(BaseModel):
    """One scripted misbehaviour of `vendor`, for one `tenant` or (None) for all."""

    model_config = ConfigDict(extra="forbid")

    vendor: str
    tenant: int | None = None
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after: float | None = Field(default=None, ge=0.0)
    latency_ms: int = Field(default=0, ge=0)
    hang_s: float = Field(default=0.0, ge=0.0)
    drop: bool = False
    outage: Outage | None = None
    thin: bool = False
    garbage: bool = False  # answer 200 with a body that is not the vendor's JSON
    reject_records: list[str] = Field(default_factory=list)
    batch_only: bool = False  # reject_records applies to batch writes only
    erp_reject_fields: list[str] = Field(default_factory=list)
    down: bool = False
    rate_limit_per_s: float | None = Field(default=None, gt=0)  # 429 above this rate
    times: int | None = Field(default=None, ge=1)  # strike this many calls, then retire
    skip: int = Field(default=0, ge=0)  # let this many calls through before striking

    @model_validator(mode="after")
    def _vendor_named(self) -> Fault:
        if not self.vendor:
            raise ValueError("a fault needs a vendor")
        return self

    @property
    def failure_status(self) -> int:
        """The status a strike answers with (unless it drops the connection)."""
        if self.status is not None:
            return self.status
        return RATE_LIMIT_STATUS if self.rate_limit_per_s is not None else DEFAULT_FAULT_STATUS

    @property
    def strike_rate(self) -> float:
        """Probability that a call strikes when neither `down` nor in an outage."""
        if self.error_rate is not None:
            return self.error_rate
        names_a_failure = self.status is not None or self.hang_s > 0 or self.drop
        return 1.0 if names_a_failure else 0.0

    def is_active(self, now: float) -> bool:
        return self.outage is None or self.outage.covers(now)


def fault_from(fault: Fault | None, fields: dict[str, Any]) -> Fault:
    """The fault `set_fault` was given: a `Fault`, or a Fault's fields, never both."""
    if fault is None:
        return Fault(**fields)
    if fields:
        raise TypeError("pass a Fault or its fields, not both")
    return fault


@dataclass(frozen=True)
class Verdict:
    """What the simulator does with one call: the fault that shapes it, and whether it fails."""

    fault: Fault | None
    strikes: bool

    @property
    def latency_s(self) -> float:
        return self.fault.latency_ms / 1000.0 if self.fault else 0.0


NO_FAULT = Verdict(fault=None, strikes=False)


class FaultBook:
    """The faults in force, at most one per (vendor, tenant), and the seeded draws.

    Thread-safe: the HTTP server answers each request in its own thread.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, int | None], Fault] = {}
        self._streams: dict[tuple[str, int], random.Random] = {}
        self._skipped: dict[tuple[str, int | None], int] = {}
        self._let_through: dict[tuple[str, int], deque[float]] = {}

    def set(self, fault: Fault) -> None:
        """Put `fault` in force, replacing any fault for the same vendor and tenant."""
        with self._lock:
            self._faults[(fault.vendor, fault.tenant)] = fault
            self._skipped[(fault.vendor, fault.tenant)] = 0

    def remove(self, vendor: str, tenant: int | None) -> bool:
        """Remove the fault for exactly this vendor and tenant (None: the one for all
        tenants); False if there was none. Draw streams carry on, as with `clear`."""
        with self._lock:
            return self._faults.pop((vendor, tenant), None) is not None

    def clear(self) -> None:
        """Remove every fault; the draw streams carry on, so later calls stay reproducible."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Remove every fault and restart every draw stream from the seed."""
        with self._lock:
            self._faults.clear()
            self._streams.clear()
            self._let_through.clear()

    def all(self) -> list[Fault]:
        with self._lock:
            return list(self._faults.values())

    def verdict(self, vendor: str, tenant: int, now: float) -> Verdict:
        """Decide one call. Consumes one draw of the (vendor, tenant) stream, always."""
        with self._lock:
            draw = self._stream(vendor, tenant).random()
            fault = self._most_specific_active(vendor, tenant, now)
            if fault is None:
                return NO_FAULT
            if self._skipping(fault):
                return Verdict(fault=fault, strikes=False)
            always = fault.down or fault.outage is not None
            if fault.rate_limit_per_s is not None and not fault.down:
                strikes = self._over_rate(vendor, tenant, fault.rate_limit_per_s, now)
            else:
                strikes = always or draw < fault.strike_rate
            if strikes and fault.times is not None:
                self._count_strike(fault)
        return Verdict(fault=fault, strikes=strikes)

    def _skipping(self, fault: Fault) -> bool:
        """Caller holds the lock. Count a call against the fault's `skip` allowance."""
        key = (fault.vendor, fault.tenant)
        seen = self._skipped.get(key, 0)
        if seen >= fault.skip:
            return False
        self._skipped[key] = seen + 1
        return True

    def _over_rate(self, vendor: str, tenant: int, limit: float, now: float) -> bool:
        """Caller holds the lock. Would this call exceed `limit` calls let through in the
        last second? If not, it is let through and counted."""
        window = self._let_through.setdefault((vendor, tenant), deque())
        while window and window[0] <= now - RATE_WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return True
        window.append(now)
        return False

    def _count_strike(self, fault: Fault) -> None:
        """Caller holds the lock. Retire a `times` fault after its last strike."""
        key = (fault.vendor, fault.tenant)
        left = (fault.times or 0) - 1
        if left <= 0:
            self._faults.pop(key, None)
        else:
            self._faults[key] = fault.model_copy(update={"times": left})

    def _stream(self, vendor: str, tenant: int) -> random.Random:
        key = (vendor, tenant)
        if key not in self._streams:
            self._streams[key] = random.Random(f"{self.seed}:{vendor}:{tenant}")
        return self._streams[key]

    def _most_specific_active(self, vendor: str, tenant: int, now: float) -> Fault | None:
        for key in ((vendor, tenant), (vendor, None)):
            fault = self._faults.get(key)
            if fault is not None and fault.is_active(now):
                return fault
        return None
