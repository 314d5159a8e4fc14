"""The CRM: OAuth2 client-credentials tokens and idempotent contact upserts.

Every contact write carries the caller's Idempotency-Key, so a write retried after a 401,
a timeout or a redelivered task is answered from the CRM's memory instead of creating a
second contact. The bearer token comes from the shared token store (`pipeline.crm_tokens`),
which owns caching, single-flight refresh and the 401 → refresh → retry-once rule.

Secrets travel in request bodies and headers only: the client secret in the token
request's form, the access token in `Authorization`. Neither reaches a log line, an
exception message (they carry the path, never the body) or this client's repr.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests

from pipeline.crm_tokens import CrmTokens, TokenGrant
from pipeline.errors import (
    InputError,
    VendorAuthError,
    VendorBadResponseError,
    VendorClientError,
    classify,
    raise_for_vendor,
)
from pipeline.settings import Settings
from pipeline.vendors.base import VendorClient

_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
LOOKUP_CHUNK = 500  # idempotency keys per lookup request (the CRM's own limit)
# OAuth2 (RFC 6749 §5.2) refuses bad client credentials with a 400 and one of these codes.
_OAUTH_REFUSALS = frozenset({"invalid_client", "invalid_grant", "unauthorized_client"})


class CrmClient(VendorClient):
    vendor = "crm"

    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        *,
        tokens: CrmTokens | None = None,
    ) -> None:
        super().__init__(settings, session)
        self._settings = settings
        self._tokens = tokens

    @property
    def tokens(self) -> CrmTokens:
        """The token store this client's writes draw from (built on first use)."""
        if self._tokens is None:
            self._tokens = CrmTokens.from_settings(self, self._settings)
        return self._tokens

    def request_token(self, tenant_id: int, secret: Mapping[str, str]) -> TokenGrant:
        """POST /oauth/token with the client credentials in `secret`.

        Raises `VendorAuthError` (details `vendor_error`, e.g. `invalid_client`) when the
        credentials are refused, `InputError` when `secret` lacks a field, another
        `VendorError` when the endpoint fails. Not idempotent, but harmless to repeat.
        """
        missing = [name for name in ("client_id", "client_secret") if not secret.get(name)]
        if missing:
            raise InputError(f"the crm credential of tenant {tenant_id} lacks {', '.join(missing)}")
        form = {
            "grant_type": "client_credentials",
            "client_id": secret["client_id"],
            "client_secret": secret["client_secret"],
        }
        response = self._send("POST", tenant_id, "oauth/token", {}, data=form)
        try:
            answer = response.json()
            return TokenGrant(str(answer["access_token"]), float(answer["expires_in"]))
        except (ValueError, KeyError, TypeError):
            raise VendorBadResponseError(
                "crm token endpoint answered without access_token/expires_in",
                vendor=self.vendor,
                status_code=response.status_code,
            ) from None

    def upsert_contact(
        self, tenant_id: int, record: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """Create or update one contact (by `external_id`); `{"id": ..., "created": ...}`.

        Idempotent under `idempotency_key`: the same key again returns the first answer.
        A 401 is healed by the token store (fresh token, one retry with the same key);
        `AuthRequiredError` means a person must store new credentials.
        """
        if not idempotency_key:
            raise InputError("a crm upsert needs an idempotency key")
        return self.tokens.call(
            tenant_id,
            lambda token: self.upsert_with_token(tenant_id, token, record, idempotency_key),
        )

    def upsert_batch(self, tenant_id: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Upsert many contacts at once; each record carries its own `idempotency_key`.
        One result per record (`ok` true or false): a batch can partly fail."""

        def send(token: str) -> list[dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}"}
            response = self._send(
                "POST", tenant_id, "contacts/batch", headers, json={"records": records}
            )
            try:
                return list(response.json()["results"])
            except (ValueError, KeyError, TypeError):
                raise VendorBadResponseError(
                    "crm batch answered without results", vendor=self.vendor
                ) from None

        return self.tokens.call(tenant_id, send)

    def applied(self, tenant_id: int, idempotency_keys: list[str]) -> dict[str, dict[str, Any]]:
        """Which of these idempotency keys the CRM has applied: key -> `{"id", "created"}`
        (keys it never applied are absent). Asked after a write whose answer was lost (a read
        timeout): its records may be in the CRM although we never heard so."""

        def send(token: str) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            for start in range(0, len(idempotency_keys), LOOKUP_CHUNK):
                chunk = idempotency_keys[start : start + LOOKUP_CHUNK]
                response = self._send(
                    "POST",
                    tenant_id,
                    "contacts/lookup",
                    {"Authorization": f"Bearer {token}"},
                    json={"idempotency_keys": chunk},
                )
                try:
                    found.update(
                        {str(r["idempotency_key"]): dict(r) for r in response.json()["applied"]}
                    )
                except (ValueError, KeyError, TypeError):
                    raise VendorBadResponseError(
                        "crm lookup answered without applied keys", vendor=self.vendor
                    ) from None
            return found

        if not idempotency_keys:
            return {}
        return self.tokens.call(tenant_id, send)

    def upsert_with_token(
        self, tenant_id: int, token: str, record: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """One upsert with the given bearer token, no refresh: `VendorAuthError` on 401."""
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": idempotency_key}
        response = self._send("POST", tenant_id, "contacts/upsert", headers, json=dict(record))
        try:
            answer: dict[str, Any] = response.json()
            if "id" not in answer:
                raise KeyError("id")
        except (ValueError, KeyError, TypeError):
            raise VendorBadResponseError(
                "crm upsert answered without a contact id",
                vendor=self.vendor,
                status_code=response.status_code,
            ) from None
        return answer

    def _send(
        self, method: str, tenant_id: int, path: str, headers: dict[str, str], **kw: Any
    ) -> requests.Response:
        """One request; any failure becomes a `VendorError` without its cause attached (a
        requests exception can hold the prepared request, body and headers included)."""
        try:
            response = self.session.request(
                method,
                f"{self.base_url}/{path}",
                headers={**headers, "X-Tenant-Id": str(tenant_id)},
                timeout=self.timeout,
                **kw,
            )
        except requests.RequestException as exc:
            error = classify(exc, self.vendor)
            assert error is not None
            raise error from None
        try:
            return raise_for_vendor(response, self.vendor)
        except VendorAuthError as exc:
            exc.details["vendor_error"] = _vendor_error(response)
            raise
        except VendorClientError as exc:
            vendor_error = _vendor_error(response)
            if vendor_error not in _OAUTH_REFUSALS:
                raise
            raise VendorAuthError(
                f"crm refused the client credentials ({vendor_error})",
                vendor=self.vendor,
                status_code=exc.status_code,
                details={"vendor_error": vendor_error},
            ) from None


def _vendor_error(response: requests.Response) -> str:
    """The OAuth error code of a refusal (`invalid_client`, `invalid_token`), if it is one:
    a short code is safe to show; free text from the vendor is not kept."""
    try:
        code = response.json().get("error", "")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
