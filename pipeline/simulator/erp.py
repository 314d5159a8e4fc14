"""The fake ERP: an Odoo-like XML-RPC API over `res.partner`, one database set per tenant.

`POST /erp/xmlrpc/2/common` serves `authenticate(db, login, password, env)` -> uid, or False
for bad credentials; `POST /erp/xmlrpc/2/object` serves
`execute_kw(db, uid, password, "res.partner", method, args, kwargs)` with `search`,
`search_read`, `search_count`, `create`, `write` and `read`.

Errors come back the way Odoo sends them, as XML-RPC Faults inside an HTTP 200: an unknown
database ("database ... does not exist"), bad credentials ("Access Denied"), an unknown
record, or a field the instance refuses — scripted with the fault field
`erp_reject_fields`, answered like Odoo's "ValueError: Invalid field 'website' on model
'res.partner'" so the export can learn to drop that field.
"""

from __future__ import annotations

import threading
from typing import Any
from xmlrpc.client import Fault as XmlRpcFault
from xmlrpc.server import SimpleXMLRPCDispatcher

from pipeline.simulator.messages import Answer, Call

PARTNER_MODEL = "res.partner"
FIRST_UID = 2  # Odoo's admin user is uid 2; we number a database's users from there
FIRST_PARTNER_ID = 1
FAULT_APPLICATION, FAULT_ACCESS_DENIED = 1, 3
SERVER_VERSION = {"server_version": "17.0", "server_serie": "17.0", "protocol_version": 1}


def _no_database(db: str) -> XmlRpcFault:
    return XmlRpcFault(FAULT_APPLICATION, f'FATAL:  database "{db}" does not exist')


def _matches(record: dict[str, Any], domain: list[Any]) -> bool:
    """Odoo domain terms, AND-ed: '=', '!=', 'in', 'not in', 'ilike' on any stored field."""
    for term in domain:
        if term == "&":
            continue
        if not isinstance(term, list | tuple) or len(term) != 3:
            raise XmlRpcFault(FAULT_APPLICATION, f"ValueError: Invalid leaf {term!r}")
        field, operator, value = term
        stored = record.get(field, False)
        if operator == "=":
            ok = stored == value
        elif operator == "!=":
            ok = stored != value
        elif operator == "in":
            ok = stored in value
        elif operator == "not in":
            ok = stored not in value
        elif operator == "ilike":
            ok = str(value).lower() in str(stored).lower()
        else:
            raise XmlRpcFault(FAULT_APPLICATION, f"ValueError: Invalid operator {operator!r}")
        if not ok:
            return False
    return True


class ErpVendor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, dict[str, dict[str, tuple[int, str]]]] = {}
        self._partners: dict[int, dict[int, dict[str, Any]]] = {}
        self._next_partner_id: dict[int, int] = {}

    # -- set-up, from Python or the admin API ------------------------------------------------

    def register_user(self, tenant: int, db: str, login: str, password: str) -> int:
        """Create `db` for `tenant` if new and accept `login`/`password` there; returns uid."""
        with self._lock:
            users = self._users.setdefault(tenant, {}).setdefault(db, {})
            uid = users[login][0] if login in users else FIRST_UID + len(users)
            users[login] = (uid, password)
        return uid

    def partners(self, tenant: int) -> list[dict[str, Any]]:
        """The tenant's stored partners, in creation order, each with its `id`."""
        with self._lock:
            return [dict(record) for record in self._partners.get(tenant, {}).values()]

    def reset(self) -> None:
        with self._lock:
            self._users.clear()
            self._partners.clear()
            self._next_partner_id.clear()

    # -- the vendor's endpoints --------------------------------------------------------------

    def common(self, call: Call) -> Answer:
        """POST /erp/xmlrpc/2/common."""

        def authenticate(db: str, login: str, password: str, env: Any = None) -> int | bool:
            users = self._database(call.tenant, db)
            uid, expected = users.get(login, (0, None))
            return uid if expected is not None and expected == password else False

        def version() -> dict[str, Any]:
            return SERVER_VERSION

        return _xmlrpc_answer(call, {"authenticate": authenticate, "version": version})

    def object(self, call: Call) -> Answer:
        """POST /erp/xmlrpc/2/object."""

        def execute_kw(
            db: str,
            uid: int,
            password: str,
            model: str,
            method: str,
            args: list[Any],
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            self._check_access(call.tenant, db, uid, password)
            if model != PARTNER_MODEL:
                raise XmlRpcFault(FAULT_APPLICATION, f"Object {model} doesn't exist")
            rejected = call.fault.erp_reject_fields if call.fault is not None else []
            return self._execute(call.tenant, method, list(args), kwargs or {}, rejected)

        return _xmlrpc_answer(call, {"execute_kw": execute_kw})

    # -- behind the endpoints ----------------------------------------------------------------

    def _database(self, tenant: int, db: str) -> dict[str, tuple[int, str]]:
        with self._lock:
            users = self._users.get(tenant, {}).get(db)
        if users is None:
            raise _no_database(db)
        return users

    def _check_access(self, tenant: int, db: str, uid: int, password: str) -> None:
        users = self._database(tenant, db)
        if (uid, password) not in users.values():
            raise XmlRpcFault(FAULT_ACCESS_DENIED, "Access Denied")

    def _execute(
        self,
        tenant: int,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        rejected_fields: list[str],
    ) -> Any:
        with self._lock:
            partners = self._partners.setdefault(tenant, {})
            if method in ("search", "search_read", "search_count"):
                domain = args[0] if args else kwargs.get("domain", [])
                found = [pid for pid, record in partners.items() if _matches(record, domain)]
                found = found[int(kwargs.get("offset", 0)) :]
                if kwargs.get("limit"):
                    found = found[: int(kwargs["limit"])]
                if method == "search":
                    return found
                if method == "search_count":
                    return len(found)
                return _read(partners, found, kwargs.get("fields"))
            if method == "read":
                ids = args[0] if args else kwargs.get("ids", [])
                fields = args[1] if len(args) > 1 else kwargs.get("fields")
                return _read(partners, _existing(partners, ids), fields)
            if method == "create":
                many = args[0] if args else kwargs.get("vals_list", kwargs.get("vals", {}))
                vals_list = many if isinstance(many, list) else [many]
                for vals in vals_list:
                    _refuse_fields(vals, rejected_fields)
                ids = [self._create(tenant, partners, vals) for vals in vals_list]
                return ids if isinstance(many, list) else ids[0]
            if method == "write":
                ids = _existing(partners, args[0] if args else kwargs.get("ids", []))
                vals = args[1] if len(args) > 1 else kwargs.get("vals", {})
                _refuse_fields(vals, rejected_fields)
                for pid in ids:
                    partners[pid].update(vals)
                return True
        raise XmlRpcFault(
            FAULT_APPLICATION,
            f"AttributeError: The method '{method}' does not exist on the model '{PARTNER_MODEL}'",
        )

    def _create(self, tenant: int, partners: dict[int, dict[str, Any]], vals: Any) -> int:
        if not isinstance(vals, dict) or not vals.get("name"):
            raise XmlRpcFault(
                FAULT_APPLICATION, "ValidationError: missing required field 'name' on res.partner"
            )
        pid = self._next_partner_id.get(tenant, FIRST_PARTNER_ID)
        self._next_partner_id[tenant] = pid + 1
        partners[pid] = {**vals, "id": pid}
        return pid


def _refuse_fields(vals: Any, rejected_fields: list[str]) -> None:
    for field in vals if isinstance(vals, dict) else {}:
        if field in rejected_fields:
            raise XmlRpcFault(
                FAULT_APPLICATION,
                f"ValueError: Invalid field '{field}' on model '{PARTNER_MODEL}'",
            )


def _existing(partners: dict[int, dict[str, Any]], ids: Any) -> list[int]:
    wanted = ids if isinstance(ids, list) else [ids]
    missing = [pid for pid in wanted if pid not in partners]
    if missing:
        raise XmlRpcFault(
            FAULT_APPLICATION,
            f"MissingError: Record does not exist or has been deleted. ({PARTNER_MODEL}{missing})",
        )
    return wanted


def _read(
    partners: dict[int, dict[str, Any]], ids: list[int], fields: list[str] | None
) -> list[dict[str, Any]]:
    if not fields:
        return [dict(partners[pid]) for pid in ids]
    return [{"id": pid, **{f: partners[pid].get(f, False) for f in fields}} for pid in ids]


def _xmlrpc_answer(call: Call, functions: dict[str, Any]) -> Answer:
    """Run one XML-RPC request against `functions`; a raised Fault becomes a Fault response."""
    dispatcher = SimpleXMLRPCDispatcher(allow_none=True, encoding="utf-8")
    for name, function in functions.items():
        dispatcher.register_function(function, name)
    # Typeshed says str; CPython returns the encoded bytes. Accept both.
    body: str | bytes = dispatcher._marshaled_dispatch(call.body)
    raw = body.encode() if isinstance(body, str) else body
    return Answer(status=200, body=raw, content_type="text/xml")
