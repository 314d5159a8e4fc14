"""The secret-grep test (issue 4, item 1): stored credentials never leak.

Known, distinctive secrets are stored for three tenants and used by a full pipeline
(enrichment → CRM sync → ERP export) on a real worker: one tenant where everything works,
one whose CRM secret is refused (AUTH_REQUIRED, a credential marked `needs_attention`,
warnings logged) and one whose ERP password is refused. Then every place a secret could
leak is searched, both verbatim and inside base64 (kombu base64-encodes message bodies):

- the worker's log (JSON lines, errors included);
- every byte written to Redis while the pipeline ran (a raw `MONITOR` capture: each task
  message as it was published, by this process or by the worker, each result, each event)
  and every key left in the test Redis db afterwards;
- every row of every table of the test database.

The secrets must also have been *used* (the CRM has the contacts, the ERP the partners),
so the test cannot pass vacuously.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
from sqlalchemy import create_engine, inspect, text

from pipeline import enqueue_enrichment
from pipeline.credentials import get_credential, put_credential
from pipeline.simulator import Simulator
from tests.support.processes import Worker, wait_until
from tests.support.runs import company, finished, stages_of

_BASE64 = re.compile(rb"[A-Za-z0-9+/_-]{12,}={0,2}")


def _decoded_base64(blob: bytes) -> Iterator[bytes]:
    """Every run of base64 in `blob` that decodes (standard and url-safe alphabets)."""
    for match in _BASE64.finditer(blob):
        token = match.group()
        for offset in range(4):  # the run may start mid-token: try each alignment
            part = token[offset:].rstrip(b"=")
            part = part[: len(part) - len(part) % 4] if len(part) % 4 == 1 else part
            padded = part + b"=" * (-len(part) % 4)
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    yield decode(padded)
                except (binascii.Error, ValueError):
                    continue


def leaks(secrets: dict[str, str], blob: bytes, where: str) -> list[str]:
    """Where each secret occurs in `blob`, verbatim or base64-encoded ([] when nowhere)."""
    found = []
    for label, secret in secrets.items():
        needle = secret.encode()
        at = blob.find(needle)
        if at >= 0:
            context = blob[max(0, at - 200) : at + len(needle) + 100]
            found.append(f"{label} in {where}: ...{context!r}...")
        elif any(needle in decoded for decoded in _decoded_base64(blob)):
            found.append(f"{label} in {where} (base64-encoded)")
    return found


class RedisMonitor:
    """A raw `MONITOR` connection: every command any client sends to the Redis server."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self._sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self._sock.sendall(b"MONITOR\r\n")
        self._sock.settimeout(0.2)
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._started.wait(5):
            raise RuntimeError("redis MONITOR did not answer")

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            if not self._started.is_set() and b"+OK" in chunk:
                self._started.set()
            self._chunks.append(chunk)

    def stop(self) -> bytes:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        return b"".join(self._chunks)


@contextmanager
def monitored(url: str) -> Iterator[list[bytes]]:
    """Capture the Redis command stream for the duration of the block (into the list)."""
    capture: list[bytes] = []
    monitor = RedisMonitor(url)
    try:
        yield capture
    finally:
        capture.append(monitor.stop())


def redis_db_dump(url: str) -> bytes:
    """Every key and every value of the Redis db at `url`, whatever the type."""
    client: Any = redis.Redis.from_url(url)  # bytes replies (redis-py types are loose)
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        parts.append(b"\n" + key + b" " + kind + b": ")
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                parts += [field, b"=", value, b"\n"]
        elif kind == b"set":
            parts.extend(client.smembers(key))
        elif kind == b"zset":
            parts.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"stream":
            for entry_id, fields in client.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, b"=", value]
    return b" ".join(parts)


def database_dump(url: str) -> dict[str, bytes]:
    """Every row of every table at `url`, as text, by table."""
    engine = create_engine(url)
    try:
        dumps = {}
        with engine.connect() as conn:
            for table in inspect(engine).get_table_names():
                rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
                dumps[table] = "\n".join(repr(tuple(row)) for row in rows).encode()
        return dumps
    finally:
        engine.dispose()


def new_tenant() -> int:
    return random.randint(10**9, 2 * 10**9)


def store(simulator: Simulator, tenant: int, crm: tuple[str, str], erp: tuple[str, str]) -> None:
    """Register what the vendors accept, store what the tenant gave us (may differ)."""
    accepted_crm, stored_crm = crm
    accepted_erp, stored_erp = erp
    simulator.register_crm_client(tenant, f"client-{tenant}", accepted_crm)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": stored_crm})
    simulator.register_erp_user(tenant, f"odoo_{tenant}", "admin", accepted_erp)
    put_credential(
        tenant, "erp", {"db": f"odoo_{tenant}", "login": "admin", "password": stored_erp}
    )


def test_no_stored_secret_reaches_logs_broker_results_or_database_rows(
    integration_env: dict[str, str],
    worker: Worker,
    simulator: Simulator,
    tenant: int,
    api: Any,
    admin_headers: dict[str, str],
) -> None:
    """Secrets in use — and secrets refused — appear in no log line, no broker message or
    result (as published, or left behind), and no database row; the plaintext secrets
    were nevertheless sent to the vendors, which accepted the good ones."""
    tag = uuid.uuid4().hex
    secrets = {
        "good crm secret": f"S3CR3T-crm-{tag}",
        "good erp password": f"S3CR3T-erp-{tag}",
        "refused crm secret": f"S3CR3T-crm-wrong-{tag}",
        "refused erp password": f"S3CR3T-erp-wrong-{tag}",
        "crm secret of the erp-refused tenant": f"S3CR3T-crm-2-{tag}",
        "erp password of the crm-refused tenant": f"S3CR3T-erp-2-{tag}",
    }
    bad_crm, bad_erp = new_tenant(), new_tenant()
    broker = integration_env["BROKER_URL"]

    with monitored(broker) as captured:
        store(
            simulator,
            tenant,
            (secrets["good crm secret"],) * 2,
            (secrets["good erp password"],) * 2,
        )
        store(
            simulator,
            bad_crm,
            (f"accepted-{tag}", secrets["refused crm secret"]),
            (secrets["erp password of the crm-refused tenant"],) * 2,
        )
        store(
            simulator,
            bad_erp,
            (secrets["crm secret of the erp-refused tenant"],) * 2,
            (f"accepted-{tag}", secrets["refused erp password"]),
        )
        firsts = {
            t: enqueue_enrichment(t, [company(i, t) for i in range(3)], then=["crm_sync", "export"])
            for t in (tenant, bad_crm, bad_erp)
        }
        for first in firsts.values():
            finished(first, timeout=90)
        good = stages_of(firsts[tenant], 2)
        refused_erp = stages_of(firsts[bad_erp], 2)
        refused_crm = stages_of(firsts[bad_crm], 1)["crm_sync"]
        wait_until(  # the worker noted the stop: its last write for that pipeline
            lambda: "PIPELINE_STOPPED" in (finished(refused_crm.id).run.degraded_reasons or ""),
            timeout=30,
            what="the stopped pipeline to be noted",
        )

    # The secrets were really used: good ones accepted, refused ones refused.
    assert good["crm_sync"].status == "succeeded" and good["export"].status == "succeeded"
    assert len(simulator.crm_contacts(tenant)) == good["crm_sync"].items_total > 0
    assert len(simulator.erp_partners(tenant)) == 3
    assert refused_crm.status == "failed" and simulator.crm_contacts(bad_crm) == []
    assert get_credential(bad_crm, "crm").needs_attention
    assert refused_erp["crm_sync"].status == "succeeded"
    assert refused_erp["export"].status == "degraded" and refused_erp["export"].export_disabled
    assert simulator.erp_partners(bad_erp) == []

    log = worker.log_text().encode()
    stream = b"".join(captured)
    # Non-vacuity of the sources searched: the failure was logged, the worker's own
    # publishes (the export stage is sent by the worker) were captured.
    assert b'"crm_sync.stopped"' in log
    assert b"tasks.export.export_run" in stream and b"tasks.crm_sync.sync_run" in stream
    # ...and the search reaches into task arguments and base64-encoded message bodies.
    assert leaks({"run id": str(firsts[tenant])}, stream, "the stream")
    assert any(b'"errbacks"' in decoded for decoded in _decoded_base64(stream))

    # What the web API shows of those pipelines: runs with items, dead letters, breakers.
    shown = b""
    for owner in firsts:
        page = api.get(f"/runs?tenant={owner}", headers=admin_headers).json()
        for run in page["runs"]:
            shown += api.get(f"/runs/{run['id']}", headers=admin_headers).content
    shown += api.get("/dead-letters?limit=200", headers=admin_headers).content
    shown += api.get("/breakers", headers=admin_headers).content
    assert str(firsts[tenant]).encode() in shown

    found = leaks(secrets, log, "the worker log")
    found += leaks(secrets, shown, "the web API's answers")
    found += leaks(secrets, stream, "the Redis command stream (MONITOR)")
    found += leaks(secrets, redis_db_dump(broker), f"Redis db {broker}")
    tables = database_dump(integration_env["DATABASE_URL"])
    assert {"credentials", "runs", "run_items", "dead_letters", "api_keys"} <= set(tables)
    assert str(tenant).encode() in tables["credentials"]
    for table, rows in tables.items():
        found += leaks(secrets, rows, f"table {table}")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("blob", "hit"),
    [
        (b'{"x": "S3CR3T-abc"}', True),
        (base64.b64encode(b'[["S3CR3T-abc"], {}]'), True),
        (b"body: " + base64.b64encode(b'xx"S3CR3T-abc"'), True),
        (b"S3CR3T-ab c", False),
    ],
)
def test_the_grep_finds_a_secret_verbatim_or_base64_encoded(blob: bytes, hit: bool) -> None:
    """The search itself works, so an empty result above means no secret was there."""
    assert bool(leaks({"s": "S3CR3T-abc"}, blob, "blob")) is hit
