"""A tiny real HTTP vendor on loopback whose answers a test scripts in advance.

    stub.script("crm", [503, 503, 200])      # answers, in order; 200 once the list is used up
    stub.script("crm", [(429, {"Retry-After": "1"})])
    stub.hits("crm")                         # arrival times (time.time()) of each request

A scripted answer may also be {"status": 200, "delay": 6.0} to hang past a read timeout.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class VendorStub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[dict[str, Any]]] = {}
        self._hits: dict[str, list[float]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/").split("?")[0].split("/")[-1]
                answer = stub._next(name)
                if answer.get("delay"):
                    time.sleep(answer["delay"])
                body = json.dumps({"vendor": name, "status": answer["status"]}).encode()
                try:
                    self.send_response(answer["status"])
                    for key, value in answer.get("headers", {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, name: str, answers: list[Any]) -> str:
        """Queue answers for `name`; returns the URL to call."""
        normalized = []
        for answer in answers:
            if isinstance(answer, int):
                answer = {"status": answer}
            elif isinstance(answer, tuple):
                answer = {"status": answer[0], "headers": answer[1]}
            normalized.append(answer)
        with self._lock:
            self._scripts[name] = normalized
            self._hits[name] = []
        return f"{self.url}/v/{name}"

    def hits(self, name: str) -> list[float]:
        with self._lock:
            return list(self._hits.get(name, []))

    def _next(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._hits.setdefault(name, []).append(time.time())
            queue = self._scripts.get(name, [])
            return queue.pop(0) if queue else {"status": 200}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
