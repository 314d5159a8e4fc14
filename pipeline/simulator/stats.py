"""What the simulator counts, per vendor and tenant: calls, errors, duplicate keys, tokens.

A call is every vendor request, including those a fault made fail; an error is a call whose
answer was not 2xx, or that was dropped or hung. Admin requests are never counted.
`snapshot()` is the JSON the admin endpoint serves, tenants as strings (JSON object keys).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


class CallStats:
    """Thread-safe counters; every method is safe to call from any request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._errors: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._duplicate_keys: Counter[int] = Counter()
        self._token_requests: Counter[int] = Counter()

    def count_call(self, vendor: str, tenant: int) -> None:
        with self._lock:
            self._calls[vendor][tenant] += 1

    def count_error(self, vendor: str, tenant: int) -> None:
        with self._lock:
            self._errors[vendor][tenant] += 1

    def count_duplicate_key(self, tenant: int) -> None:
        """An idempotency key the CRM had already seen (the first answer was replayed)."""
        with self._lock:
            self._duplicate_keys[tenant] += 1

    def count_token_request(self, tenant: int) -> None:
        """A request that reached the CRM's OAuth token endpoint (it is also a crm call)."""
        with self._lock:
            self._token_requests[tenant] += 1

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._errors.clear()
            self._duplicate_keys.clear()
            self._token_requests.clear()

    def snapshot(self) -> dict[str, Any]:
        """`{"calls": {vendor: {tenant: n}}, "errors": ..., "duplicate_idempotency_keys":
        {tenant: n}, "token_requests": {tenant: n}}`, tenants as strings."""
        with self._lock:
            return {
                "calls": {vendor: _by_tenant(c) for vendor, c in self._calls.items()},
                "errors": {vendor: _by_tenant(c) for vendor, c in self._errors.items()},
                "duplicate_idempotency_keys": _by_tenant(self._duplicate_keys),
                "token_requests": _by_tenant(self._token_requests),
            }


def _by_tenant(counter: Counter[int]) -> dict[str, int]:
    return {str(tenant): n for tenant, n in sorted(counter.items())}
