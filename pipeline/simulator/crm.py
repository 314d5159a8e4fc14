"""The fake CRM: OAuth client-credentials tokens, idempotent contact upserts, batch upserts.

Everything is per tenant: each tenant registers its own OAuth clients, a token works only
for the tenant it was issued to, and contacts and idempotency keys never cross tenants.

Promises the product's CRM client relies on (and tests check):
- a token expires `expires_in` seconds after issue by the simulator's clock, and
  `revoke(tenant)` kills all of a tenant's tokens at once: both answer 401;
- the same `Idempotency-Key` (or a batch record's `idempotency_key`) seen again returns the
  first answer unchanged and is counted as a duplicate; only successful work is remembered,
  so a request turned away (401, validation, an injected fault) may be retried with its key;
- a contact's `id` is stable per external_id: `created` is true once, then false;
- `POST /crm/contacts/lookup {"idempotency_keys": [...]}` says which of the tenant's keys
  were applied (by a single or a batch upsert), with the contact id each one wrote — how a
  client whose answer was lost (a read timeout) learns whether its write happened. A
  lookup is a CRM call like any other: counted, and subject to the CRM's faults.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.simulator.messages import Answer, Call, Refusal
from pipeline.simulator.stats import CallStats

DEFAULT_TOKEN_TTL_S = 3600
FIRST_CONTACT_ID = 1001
MAX_LOOKUP_KEYS = 500


@dataclass(frozen=True)
class _Client:
    secret: str
    expires_in: int


@dataclass(frozen=True)
class _Token:
    tenant: int
    expires_at: float


class CrmVendor:
    def __init__(self, stats: CallStats, clock: Callable[[], float]) -> None:
        self._stats = stats
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[int, dict[str, _Client]] = {}
        self._tokens: dict[str, _Token] = {}
        self._contacts: dict[int, dict[str, dict[str, Any]]] = {}
        self._next_id: dict[int, int] = {}
        self._upserts_by_key: dict[tuple[int, str], Answer] = {}
        self._records_by_key: dict[tuple[int, str], dict[str, Any]] = {}
        self._applied: dict[tuple[int, str], dict[str, Any]] = {}

    # -- set-up, from Python or the admin API ------------------------------------------------

    def register_client(
        self,
        tenant: int,
        client_id: str,
        client_secret: str,
        expires_in: int = DEFAULT_TOKEN_TTL_S,
    ) -> None:
        """Accept these client credentials for `tenant`; registering again replaces them."""
        with self._lock:
            self._clients.setdefault(tenant, {})[client_id] = _Client(client_secret, expires_in)

    def revoke_tokens(self, tenant: int) -> None:
        """Invalidate every token issued to `tenant` (the next use answers 401)."""
        with self._lock:
            self._tokens = {key: t for key, t in self._tokens.items() if t.tenant != tenant}

    def contacts(self, tenant: int) -> list[dict[str, Any]]:
        """The tenant's stored contacts, in creation order."""
        with self._lock:
            return [dict(record) for record in self._contacts.get(tenant, {}).values()]

    def reset(self) -> None:
        with self._lock:
            self._clients.clear()
            self._tokens.clear()
            self._contacts.clear()
            self._next_id.clear()
            self._upserts_by_key.clear()
            self._records_by_key.clear()
            self._applied.clear()

    # -- the vendor's endpoints --------------------------------------------------------------

    def token(self, call: Call) -> Answer:
        """POST /crm/oauth/token (form or JSON): client credentials -> bearer token."""
        self._stats.count_token_request(call.tenant)
        data = call.form_or_json()
        if data.get("grant_type") != "client_credentials":
            raise Refusal(400, "unsupported_grant_type", "only client_credentials")
        with self._lock:
            client = self._clients.get(call.tenant, {}).get(str(data.get("client_id", "")))
            if client is None or client.secret != str(data.get("client_secret", "")):
                raise Refusal(400, "invalid_client")  # RFC 6749 §5.2: credentials in the body
            token = secrets.token_urlsafe(24)
            self._tokens[token] = _Token(call.tenant, self._clock() + client.expires_in)
        body = {"access_token": token, "token_type": "bearer", "expires_in": client.expires_in}
        return Answer.json(body)

    def upsert(self, call: Call) -> Answer:
        """POST /crm/contacts/upsert: one contact, idempotent under `Idempotency-Key`."""
        self._authorize(call)
        key = call.header("Idempotency-Key")
        if not key:
            raise Refusal(400, "missing_idempotency_key", "send an Idempotency-Key header")
        record = call.json()
        with self._lock:
            first = self._upserts_by_key.get((call.tenant, key))
            if first is not None:
                self._stats.count_duplicate_key(call.tenant)
                return first
            problem = self._problem_with(call, record, in_batch=False)
            if problem:
                raise Refusal(422, "validation", problem)
            contact_id, created = self._store(call.tenant, record)
            answer = Answer.json({"id": contact_id, "created": created})
            self._upserts_by_key[(call.tenant, key)] = answer
            self._applied[(call.tenant, key)] = {"id": contact_id, "created": created}
        return answer

    def batch(self, call: Call) -> Answer:
        """POST /crm/contacts/batch: many records, each succeeding or failing on its own."""
        self._authorize(call)
        records = call.json().get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise Refusal(400, "bad_request", "'records' must be a list of objects")
        with self._lock:
            results = [self._batch_record(call, record) for record in records]
        return Answer.json({"results": results})

    def lookup(self, call: Call) -> Answer:
        """POST /crm/contacts/lookup: which of these idempotency keys were applied.

        `{"applied": [{"idempotency_key", "id", "created"}, ...], "unknown": [...]}`, in the
        order asked; `created` is what the applying write answered."""
        self._authorize(call)
        keys = call.json().get("idempotency_keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise Refusal(400, "bad_request", "'idempotency_keys' must be a list of strings")
        if len(keys) > MAX_LOOKUP_KEYS:
            raise Refusal(400, "bad_request", f"at most {MAX_LOOKUP_KEYS} keys per lookup")
        applied, unknown = [], []
        with self._lock:
            for key in keys:
                found = self._applied.get((call.tenant, key))
                if found is None:
                    unknown.append(key)
                else:
                    applied.append({"idempotency_key": key, **found})
        return Answer.json({"applied": applied, "unknown": unknown})

    # -- inside the lock ---------------------------------------------------------------------

    def _batch_record(self, call: Call, record: dict[str, Any]) -> dict[str, Any]:
        key = str(record.get("idempotency_key") or "")
        if not key:
            return _failed(key, "idempotency_key is required")
        first = self._records_by_key.get((call.tenant, key))
        if first is not None:
            self._stats.count_duplicate_key(call.tenant)
            return first
        fields = {name: value for name, value in record.items() if name != "idempotency_key"}
        problem = self._problem_with(call, fields, in_batch=True)
        if problem:
            return _failed(key, problem)
        contact_id, created = self._store(call.tenant, fields)
        result = {"idempotency_key": key, "ok": True, "id": contact_id, "created": created}
        self._records_by_key[(call.tenant, key)] = result
        self._applied[(call.tenant, key)] = {"id": contact_id, "created": created}
        return result

    def _problem_with(self, call: Call, record: dict[str, Any], *, in_batch: bool) -> str:
        """Why the CRM would reject `record` ('' when it would not)."""
        external_id = record.get("external_id")
        if not isinstance(external_id, str | int) or external_id == "":
            return "external_id is required"
        email = record.get("email")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            return f"email {email!r} is not a valid address"
        fault = call.fault
        applies = fault is not None and (in_batch or not fault.batch_only)
        if applies and fault is not None and str(external_id) in fault.reject_records:
            return f"record {external_id} rejected: required field 'Lead Source' is missing"
        return ""

    def _store(self, tenant: int, record: dict[str, Any]) -> tuple[int, bool]:
        contacts = self._contacts.setdefault(tenant, {})
        external_id = str(record["external_id"])
        existing = contacts.get(external_id)
        if existing is not None:
            existing.update(record, external_id=external_id)
            return existing["id"], False
        contact_id = self._next_id.get(tenant, FIRST_CONTACT_ID)
        self._next_id[tenant] = contact_id + 1
        contacts[external_id] = {**record, "external_id": external_id, "id": contact_id}
        return contact_id, True

    def _authorize(self, call: Call) -> None:
        with self._lock:
            token = self._tokens.get(call.bearer())
        if token is None or token.tenant != call.tenant:
            raise Refusal(401, "invalid_token", "unknown or revoked access token")
        if self._clock() >= token.expires_at:
            raise Refusal(401, "invalid_token", "access token expired")


def _failed(key: str, message: str) -> dict[str, Any]:
    return {"idempotency_key": key, "ok": False, "error": "validation", "message": message}
