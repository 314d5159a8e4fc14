"""Breakers failed and tripped through production's own calls."""

from __future__ import annotations

import pytest

from pipeline.breakers import breaker_for
from pipeline.errors import VendorServerError
from pipeline.settings import get_settings


def fail(tenant: int, vendor: str, times: int = 1) -> None:
    """Failed calls through the tenant's breaker, as production makes them."""

    def failing() -> None:
        raise VendorServerError("503", vendor=vendor)

    for _ in range(times):
        with pytest.raises(VendorServerError):
            breaker_for(tenant, vendor).call(failing)


def trip(tenant: int, vendor: str) -> None:
    fail(tenant, vendor, get_settings().cb_error_threshold)
