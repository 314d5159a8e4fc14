"""The tenant's ERP (Odoo-like XML-RPC): find, create and update partners.

One client per export, built from the tenant's stored credential (`db`, `login`,
`password`, optionally `url`). Odoo reports errors as XML-RPC Faults inside an HTTP 200;
`classify_fault` turns the ones the export must act on into errors it can branch on.
"""

from __future__ import annotations

import http.client
import re
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from pipeline.credentials import get_credential
from pipeline.errors import (
    VendorAuthError,
    VendorClientError,
    VendorConnectionError,
    VendorError,
    VendorTimeoutError,
    classify_status,
)
from pipeline.settings import get_settings

PARTNER = "res.partner"
# Runs one request under the caller's guards: `guarded(lambda: rpc(...))`.
Guarded = Callable[[Callable[[], Any]], Any]
_INVALID_FIELD = re.compile(r"Invalid field '([^']+)'")


class ErpDatabaseMissingError(VendorClientError):
    """The tenant's ERP has no such database: nothing to export into until someone acts."""

    code = "ERP_DB_MISSING"


class ErpFieldRejectedError(VendorClientError):
    """The ERP refuses a field (an older Odoo, a module not installed).

    `field` has a default so the error can be rebuilt from its message alone, as pickle
    (prefork results) and Celery (stored exceptions) do."""

    code = "ERP_FIELD_REJECTED"

    def __init__(self, message: str, *, field: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


class _NotSent(OSError):
    """The request never fully went out (no connection, or it broke while sending): the ERP
    cannot have applied it. Keeps the cause's errno, so xmlrpc's own one retry of a
    keep-alive connection the server had closed still happens."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, type(cause).__name__)
        self.timed_out = isinstance(cause, TimeoutError)


class _TimeoutTransport(xmlrpc.client.Transport):
    """Our read timeout, and our headers (ServerProxy drops `headers` given a transport).
    A failure before the request is sent is told apart (`_NotSent`) from one while waiting
    for the answer, after which the ERP may have done the work."""

    def __init__(self, timeout: float, headers: list[tuple[str, str]]) -> None:
        super().__init__(headers=headers)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection

    def send_request(
        self, host: Any, handler: str, request_body: Any, debug: bool
    ) -> http.client.HTTPConnection:
        try:
            return super().send_request(host, handler, request_body, debug)
        except OSError as exc:
            raise _NotSent(exc) from None


class ErpClient:
    """Every RPC goes through `guarded` (the tenant's breaker, the bulkhead, call stats:
    `VendorGuard.call` bound to the tenant and run) — the same path as every other vendor."""

    vendor = "erp"

    def __init__(
        self,
        *,
        url: str,
        db: str,
        login: str,
        password: str,
        tenant_id: int,
        timeout: float,
        guarded: Guarded = lambda fn: fn(),
    ) -> None:
        self._db, self._login, self._password = db, login, password
        self._guarded = guarded
        headers = [("X-Tenant-Id", str(tenant_id))]
        base = url.rstrip("/")
        self._common = xmlrpc.client.ServerProxy(
            f"{base}/common", transport=_TimeoutTransport(timeout, headers), allow_none=True
        )
        self._object = xmlrpc.client.ServerProxy(
            f"{base}/object", transport=_TimeoutTransport(timeout, headers), allow_none=True
        )
        self._uid: int | None = None

    def __repr__(self) -> str:  # never the password
        return f"<ErpClient db={self._db!r}>"

    def probe(self) -> None:
        """`common.version()`: no login, no data — answers whenever the ERP is up."""
        self._rpc(self._common.version)

    def authenticate(self) -> int:
        uid = self._rpc(self._common.authenticate, self._db, self._login, self._password, {})
        if not uid:
            raise VendorAuthError("the ERP refused the stored login", vendor=self.vendor)
        self._uid = int(uid)
        return self._uid

    def find_partner(self, ref: str) -> int | None:
        ids = self._execute("search", [[["ref", "=", ref]]], {"limit": 1})
        return int(ids[0]) if ids else None

    def create_partner(self, vals: dict[str, Any]) -> int:
        return int(self._execute("create", [vals], {}))

    def write_partner(self, partner_id: int, vals: dict[str, Any]) -> None:
        self._execute("write", [[partner_id], vals], {})

    def _execute(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        uid = self._uid if self._uid is not None else self.authenticate()
        return self._rpc(
            self._object.execute_kw, self._db, uid, self._password, PARTNER, method, args, kwargs
        )

    def _rpc(self, method: Any, *args: Any) -> Any:
        return self._guarded(lambda: self._unguarded_rpc(method, *args))

    def _unguarded_rpc(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except xmlrpc.client.Fault as fault:
            raise classify_fault(fault) from None
        except xmlrpc.client.ProtocolError as exc:
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            raise classify_status(exc.errcode, self.vendor, retry_after=retry_after) from None
        except _NotSent as exc:
            message = (
                "erp connect timed out" if exc.timed_out else f"erp unreachable ({exc.strerror})"
            )
            error = VendorTimeoutError if exc.timed_out else VendorConnectionError
            raise error(message, vendor=self.vendor, maybe_applied=False) from None
        except TimeoutError:  # sent, no answer in time: it may have been applied
            raise VendorTimeoutError("erp timed out", vendor=self.vendor) from None
        except (OSError, http.client.HTTPException) as exc:  # cut while we waited
            raise VendorConnectionError(
                f"erp connection broke ({type(exc).__name__})", vendor="erp", maybe_applied=True
            ) from None


def classify_fault(fault: xmlrpc.client.Fault) -> VendorError:
    text = str(fault.faultString)
    if "does not exist" in text and "database" in text:
        return ErpDatabaseMissingError("the tenant's ERP database does not exist", vendor="erp")
    if "Access Denied" in text:
        return VendorAuthError("the ERP refused the stored login", vendor="erp")
    match = _INVALID_FIELD.search(text)
    if match:
        return ErpFieldRejectedError(
            f"the ERP refuses field {match.group(1)!r}", vendor="erp", field=match.group(1)
        )
    return VendorClientError(f"the ERP refused the request ({text[:120]})", vendor="erp")


def erp_client(tenant_id: int, guarded: Guarded) -> ErpClient:
    """The tenant's ERP client, from its stored credential (`CredentialError` without one);
    every RPC goes through `guarded`."""
    settings = get_settings()
    secret = get_credential(tenant_id, "erp").secret
    return ErpClient(
        guarded=guarded,
        url=secret.get("url") or f"{settings.vendor_url('erp')}/xmlrpc/2",
        db=secret["db"],
        login=secret["login"],
        password=secret["password"],
        tenant_id=tenant_id,
        timeout=settings.http_read_timeout_s,
    )
