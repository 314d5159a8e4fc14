"""`Simulator`: every third-party vendor the product calls, on one loopback HTTP port.

    with Simulator(port=0, seed=1).start() as sim:
        sim.set_fault(vendor="crawler", tenant=2, error_rate=0.5)
        requests.get(f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, ...)
        sim.stats()["calls"]["crawler"]            # {"2": 1}

It runs in a daemon thread of the calling process (tests), or in the foreground of its own
process with `serve()` (the demo, benchmarks: `pipeline simulator --port N --seed S`),
driven then over HTTP by `SimulatorAdmin`. Failures are reproducible under `seed` (see
`faults`), and the clock that outage windows and CRM token expiry read is injectable, so
tests move time instead of sleeping.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from pipeline.simulator.crm import DEFAULT_TOKEN_TTL_S, CrmVendor
from pipeline.simulator.erp import ErpVendor
from pipeline.simulator.faults import Fault, FaultBook, fault_from
from pipeline.simulator.routes import vendor_routes
from pipeline.simulator.server import SimulatorHTTPServer
from pipeline.simulator.stats import CallStats

STOP_TIMEOUT_S = 5.0
SHUTDOWN_POLL_S = 0.05  # how soon stop() is noticed; the default 0.5 s slows every test


class Simulator:
    def __init__(
        self,
        port: int = 0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.clock = clock
        self.fault_book = FaultBook(seed)
        self.call_stats = CallStats()
        self.crm = CrmVendor(self.call_stats, clock)
        self.erp = ErpVendor()
        self.routes = vendor_routes(self.crm, self.erp)
        self.vendors = frozenset(route.vendor for route in self.routes.values())
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind the port (port 0: any free one) and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._server = SimulatorHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._serve_forever, name=f"vendor-simulator:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _serve_forever(self) -> None:
        server = self._server
        if server is not None:
            server.serve_forever(poll_interval=SHUTDOWN_POLL_S)

    def stop(self) -> None:
        """Stop serving and free the port; hung answers are woken and their sockets cut."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.close()
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (only once started)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults and stats --------------------------------------------------------------------

    def set_fault(self, fault: Fault | None = None, /, **fields: Any) -> Fault:
        """Put a fault in force (replacing one for the same vendor and tenant).

        Pass a `Fault`, or its fields: `sim.set_fault(vendor="crm", status=429, retry_after=2)`.
        An unknown vendor is a ValueError: a typo would otherwise test nothing.
        """
        fault = fault_from(fault, fields)
        if fault.vendor not in self.vendors:
            raise ValueError(f"unknown vendor {fault.vendor!r}; known: {sorted(self.vendors)}")
        self.fault_book.set(fault)
        return fault

    def faults(self) -> list[Fault]:
        return self.fault_book.all()

    def clear_faults(self) -> None:
        self.fault_book.clear()

    def clear_fault(self, vendor: str, tenant: int | None = None) -> bool:
        """Remove the fault set for `vendor` and `tenant` (None: the all-tenants one);
        False if there was none."""
        return self.fault_book.remove(vendor, tenant)

    def stats(self) -> dict[str, Any]:
        """Calls, errors, duplicate idempotency keys, token requests (see `stats`)."""
        return self.call_stats.snapshot()

    def reset(self) -> None:
        """Back to a fresh simulator: no faults, stats, tokens, CRM or ERP data; draws restart."""
        self.fault_book.reset()
        self.call_stats.reset()
        self.crm.reset()
        self.erp.reset()

    # -- CRM and ERP set-up ------------------------------------------------------------------

    def register_crm_client(
        self,
        tenant: int,
        client_id: str,
        client_secret: str,
        *,
        expires_in: int = DEFAULT_TOKEN_TTL_S,
    ) -> None:
        """Accept these OAuth client credentials for `tenant`; tokens live `expires_in` s."""
        self.crm.register_client(tenant, client_id, client_secret, expires_in)

    def revoke_crm_tokens(self, tenant: int) -> None:
        self.crm.revoke_tokens(tenant)

    def crm_contacts(self, tenant: int) -> list[dict[str, Any]]:
        return self.crm.contacts(tenant)

    def register_erp_user(self, tenant: int, db: str, login: str, password: str) -> int:
        """Create database `db` for `tenant` if new, accept this login there; returns uid."""
        return self.erp.register_user(tenant, db, login, password)

    def erp_partners(self, tenant: int) -> list[dict[str, Any]]:
        return self.erp.partners(tenant)


def serve(port: int, seed: int, host: str = "127.0.0.1") -> None:
    """Run a simulator in the foreground until SIGINT or SIGTERM.

    Prints one line with its URL once it is listening (port 0 picks a free port), so a
    parent process can wait for that line and read the port from it.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Simulator(port=port, seed=seed, host=host) as sim:
            print(f"vendor simulator listening on {sim.url} (seed {seed})", flush=True)
            while not stop_requested.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
