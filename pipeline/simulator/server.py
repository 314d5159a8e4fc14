"""The HTTP side: a threading loopback server, and the life of one vendor call.

One vendor call: count it; ask the fault book for a verdict (one seeded draw); wait the
fault's latency; then either let the fake vendor answer, or strike — answer the fault's
status (with Retry-After), hang, or drop the connection. A hang with no `status` is a slow
success: the vendor does the work and answers late, after the client has given up (the
lost answer that idempotency keys exist for). Any non-2xx, hung or dropped answer is also
counted as an error. Requests under `/_admin/` go to the admin API (from loopback clients
only) and are not counted.

Answer threads are daemons, and `close()` cuts every open connection, so a hung answer or
an idle keep-alive connection never holds up `Simulator.stop()` or the test process's exit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pipeline.simulator.admin_api import ADMIN_PREFIX, admin_answer
from pipeline.simulator.faults import Fault
from pipeline.simulator.messages import Answer, Call, Refusal
from pipeline.simulator.routes import Route

if TYPE_CHECKING:
    from pipeline.simulator.simulator import Simulator

log = logging.getLogger(__name__)

IDLE_CONNECTION_TIMEOUT_S = 300
LOOPBACK = "the admin API answers loopback clients only"


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, SimulatorRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close(self) -> None:
        """Stop serving: wake hung answers, cut open connections, release the port."""
        self.stopping.set()
        self.shutdown()
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()


def tenant_of(headers: dict[str, str]) -> int:
    """`X-Tenant-Id` as an int; missing means tenant 0, anything else non-numeric is a 400."""
    raw = headers.get("x-tenant-id", "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise Refusal(400, "bad_tenant", f"X-Tenant-Id must be an integer, not {raw!r}") from None


def fault_answer(fault: Fault) -> Answer:
    """What a struck call gets: the fault's status, JSON, and Retry-After when scripted."""
    status = fault.failure_status
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    body = {"error": "simulated_fault", "message": f"simulated {fault.vendor} failure ({status})"}
    return Answer.json(body, status=status, headers=headers)


def vendor_answer(route: Route, call: Call) -> Answer:
    """The fake vendor's own answer; a refusal is a JSON error, a simulator bug a 500."""
    try:
        return route.answer(call)
    except Refusal as refusal:
        return refusal.answer()
    except Exception as exc:
        log.exception("simulator: %s failed on %s %s", route.vendor, call.method, call.path)
        return Answer.json({"error": "simulator_error", "message": repr(exc)}, status=500)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real vendors; benchmarks depend on it
    server_version = "VendorSimulator/1"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits ~40 ms
    # for the delayed ACK on every call.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks make thousands of requests."""

    def _serve(self) -> None:
        body = self._read_body()
        if self.server.stopping.is_set():
            self._drop()
            return
        path, _, raw_query = self.path.partition("?")
        query = {key: values[-1] for key, values in parse_qs(raw_query).items()}
        headers = {key.lower(): value for key, value in self.headers.items()}
        simulator = self.server.simulator
        if path.startswith(ADMIN_PREFIX):
            if not ip_address(self.client_address[0]).is_loopback:
                self._send(Answer.json({"error": "forbidden", "message": LOOPBACK}, status=403))
                return
            self._send(admin_answer(simulator, self.command, path, query, body))
            return
        route = simulator.routes.get((self.command, path))
        if route is None:
            self._send(Answer.json({"error": "not_found", "message": path}, status=404))
            return
        try:
            tenant = tenant_of(headers)
        except Refusal as refusal:
            self._send(refusal.answer())
            return
        self._vendor_call(route, Call(tenant, self.command, path, query, headers, body))

    def _vendor_call(self, route: Route, call: Call) -> None:
        simulator = self.server.simulator
        simulator.call_stats.count_call(route.vendor, call.tenant)
        verdict = simulator.fault_book.verdict(route.vendor, call.tenant, simulator.clock())
        call = replace(call, fault=verdict.fault)
        self._pause(verdict.latency_s)
        if verdict.fault is None or not verdict.strikes:
            answer = vendor_answer(route, call)
            if verdict.fault is not None and verdict.fault.garbage and answer.ok:
                answer = Answer(200, b"<html>502 Bad Gateway (but sent as 200)</html>", "text/html")
            if not answer.ok:
                simulator.call_stats.count_error(route.vendor, call.tenant)
            self._send(answer)
            return
        simulator.call_stats.count_error(route.vendor, call.tenant)
        fault = verdict.fault
        slow_success = fault.hang_s > 0 and fault.status is None and not fault.drop
        answer = vendor_answer(route, call) if slow_success else fault_answer(fault)
        self._pause(fault.hang_s)
        if fault.drop:
            self._drop()
        else:
            self._send(answer)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the simulator stops."""
        if seconds > 0:
            self.server.stopping.wait(seconds)

    def _drop(self) -> None:
        """Close the connection without a byte of answer: the client sees a reset/EOF."""
        self.close_connection = True

    def _send(self, answer: Answer) -> None:
        try:
            self.send_response(answer.status)
            if answer.body:
                self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:  # the client gave up (read timeout) before we answered
            self.close_connection = True
