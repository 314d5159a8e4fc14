"""The CRM's OAuth2 access tokens: one per tenant, shared by every worker through Redis.

Why a store and not a token per call or per process: the CRM's token endpoint is rate
limited and slow, and with 16 workers starting a sync at once a per-process cache means 16
requests per tenant — a refresh storm every hour. Here:

- **cached per tenant** in Redis, expiring `CRM_TOKEN_REFRESH_MARGIN_S` plus a random
  jitter (up to `CRM_TOKEN_JITTER_S`) before the vendor's expiry, so a token is replaced
  before it can die mid-batch and tenants do not all refresh in the same second;
- **single-flight**: on a miss, one caller takes a lock (SET NX PX with its own id; only
  the owner releases it — Lua) and asks the endpoint; the others poll Redis until the token
  appears or the lock frees, for at most `CRM_TOKEN_LOCK_WAIT_S`. A holder that dies leaves
  a lock that expires by itself (its TTL covers two token requests);
- **401 from the CRM** (`CrmTokens.call`): the refused token is dropped only if it is still
  the cached one (a peer may already have cached a fresh one), a fresh token is fetched
  (single-flight again) and the call is made once more;
- **the endpoint refuses the client credentials**: the credential is re-read from the store
  (an operator may have rotated it) and tried once more; if that is refused too, the
  credential is marked `needs_attention` and `AuthRequiredError` (code `AUTH_REQUIRED`) is
  raised. A flag in Redis then stops every worker from asking the endpoint for that tenant
  until the credential is stored again (`put_credential` makes it active).

Secrets stay out of sight: tokens and client secrets never go into log lines, exception
messages or reprs; `TokenGrant`'s repr masks its token. If Redis is unreachable a token is
fetched without caching: syncs go on, single-flight is lost until Redis returns.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import redis
import structlog

from pipeline.credentials import Credential, get_credential, mark_needs_attention
from pipeline.errors import InputError, TokenLockBusyError, VendorAuthError
from pipeline.redis_client import redis_for
from pipeline.settings import Settings, get_settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

VENDOR = "crm"
_LUA_DIR = Path(__file__).parent / "resilience" / "lua"
SCRIPTS = {
    name: (_LUA_DIR / f"crm_token_{name}.lua").read_text()
    for name in ("fetch_or_lock", "store", "compare_and_delete")
}
_WAIT, _CACHED, _LOCKED, _ATTENTION = 0, 1, 2, 3


class AuthRequiredError(VendorAuthError):
    """The CRM refused the tenant's stored client credentials, twice: a person must store
    new ones (`pipeline credentials set`). Not retryable; the sync stops for this tenant."""

    code = "AUTH_REQUIRED"


@dataclass(frozen=True, repr=False)
class TokenGrant:
    """What the token endpoint gave: a bearer token and its lifetime in seconds."""

    access_token: str
    expires_in: float

    def __repr__(self) -> str:
        return f"TokenGrant(access_token='***', expires_in={self.expires_in})"

    __str__ = __repr__


class TokenEndpoint(Protocol):
    """The CRM's token endpoint (`pipeline.vendors.crm.CrmClient` is one).

    Raises `VendorAuthError` when the client credentials are refused, another
    `VendorError` when the endpoint fails otherwise.
    """

    def request_token(self, tenant_id: int, secret: Mapping[str, str]) -> TokenGrant: ...


def cache_ttl_s(
    expires_in: float, *, margin_s: float, jitter_s: float, rng: random.Random
) -> float:
    """How long a token stays cached: its lifetime less the margin and a random jitter.

    Never less than half its lifetime, so a short-lived token (shorter than margin plus
    jitter) is still shared rather than fetched on every call. 0 for a token that is
    already dead.
    """
    early = margin_s + rng.uniform(0.0, jitter_s)
    if expires_in <= 0:
        return 0.0
    return max(expires_in - early, expires_in / 2)


def _fingerprint(credential: Credential) -> str:
    """Which stored credential was refused: a new `put_credential` gives a new one."""
    return f"{credential.id}:{credential.updated_at.isoformat()}"


class CrmTokens:
    """Per-tenant CRM access tokens, cached in Redis and fetched single-flight.

    One instance per process is enough (it remembers the last credential it read per
    tenant, so a refused refresh can tell whether the store holds something newer).
    """

    def __init__(
        self,
        client: redis.Redis,
        endpoint: TokenEndpoint,
        *,
        prefix: str,
        refresh_margin_s: float,
        jitter_s: float,
        lock_ttl_s: float,
        lock_wait_s: float,
        poll_s: float = 0.05,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        read_credential: Callable[[int], Credential] = lambda t: get_credential(t, VENDOR),
        mark_attention: Callable[[Credential, str], object] = (
            lambda credential, reason: mark_needs_attention(
                credential.tenant_id, VENDOR, reason, refused=credential.updated_at
            )
        ),
    ) -> None:
        self._redis = client
        self._endpoint = endpoint
        self._prefix = prefix
        self._margin_s = refresh_margin_s
        self._jitter_s = jitter_s
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._lock_wait_s = lock_wait_s
        self._poll_s = poll_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._read_credential = read_credential
        self._mark_attention = mark_attention
        self._credentials: dict[int, Credential] = {}
        self._fetch_or_lock = client.register_script(SCRIPTS["fetch_or_lock"])
        self._store = client.register_script(SCRIPTS["store"])
        self._compare_and_delete = client.register_script(SCRIPTS["compare_and_delete"])

    @classmethod
    def from_settings(
        cls,
        endpoint: TokenEndpoint,
        settings: Settings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> CrmTokens:
        """The store on `REDIS_URL`; its lock outlives two token requests at full timeouts."""
        settings = settings or get_settings()
        request_s = settings.http_connect_timeout_s + settings.http_read_timeout_s
        return cls(
            redis_for(settings.redis_url),
            endpoint,
            prefix=settings.redis_key_prefix,
            refresh_margin_s=settings.crm_token_refresh_margin_s,
            jitter_s=settings.crm_token_jitter_s,
            lock_ttl_s=2 * request_s + 2.0,
            lock_wait_s=settings.crm_token_lock_wait_s,
            poll_s=settings.crm_token_poll_s,
            rng=rng,
        )

    def keys(self, tenant_id: int) -> tuple[str, str, str]:
        """(token, refresh lock, attention flag): one hash tag, one Redis Cluster slot."""
        base = f"{self._prefix}:tok:{{{tenant_id}:{VENDOR}}}"
        return base, f"{base}:lock", f"{base}:attention"

    # -- the public operations -------------------------------------------------------------

    def token(self, tenant_id: int) -> str:
        """A valid-looking access token for the tenant: the cached one, or a fresh one.

        Raises `AuthRequiredError` when the tenant's credential needs attention (no request
        is made), `TokenLockBusyError` (retryable, not a breaker failure) when another
        worker held the refresh lock for the whole wait, and the endpoint's `VendorError`
        when it fails otherwise.
        """
        try:
            return self._single_flight(tenant_id)
        except redis.RedisError as exc:
            log.warning("crm_token.redis_unavailable", tenant_id=tenant_id, error=str(exc))
            return self._fetch(tenant_id).access_token

    def invalidate(self, tenant_id: int, token: str) -> bool:
        """Forget `token` if it is still the cached one; True if it was.

        Compare-and-delete: a worker holding a refused old token must not delete the fresh
        token a peer has just cached. Safe to repeat.
        """
        try:
            return bool(self._compare_and_delete(keys=[self.keys(tenant_id)[0]], args=[token]))
        except redis.RedisError as exc:
            log.warning("crm_token.redis_unavailable", tenant_id=tenant_id, error=str(exc))
            return False

    def call(self, tenant_id: int, use: Callable[[str], T]) -> T:
        """`use(token)`; if the CRM answers 401, once more with a fresh token.

        `use` must be safe to repeat after a 401 (the CRM did no work; send the same
        Idempotency-Key). A 403, or a 401 to the fresh token too, is raised as it came.
        """
        token = self.token(tenant_id)
        try:
            return use(token)
        except VendorAuthError as exc:
            if exc.status_code != 401 or isinstance(exc, AuthRequiredError):
                raise
        log.info("crm_token.refused_by_crm", tenant_id=tenant_id)
        self.invalidate(tenant_id, token)
        return use(self.token(tenant_id))

    # -- single flight ---------------------------------------------------------------------

    def _single_flight(self, tenant_id: int) -> str:
        keys = self.keys(tenant_id)
        owner = uuid.uuid4().hex
        deadline = self._clock() + self._lock_wait_s
        while True:
            found = self._fetch_or_lock(keys=list(keys), args=[owner, self._lock_ttl_ms])
            kind = int(found[0])
            if kind == _CACHED:
                return _text(found[1])
            if kind == _LOCKED:
                return self._refresh_holding_lock(tenant_id, owner)
            if kind == _ATTENTION:
                self._check_attention(tenant_id, _text(found[1]))
                continue  # the credential was stored anew: the flag is gone, look again
            left = deadline - self._clock()
            if left <= 0:
                raise TokenLockBusyError(
                    f"crm: another worker has been fetching tenant {tenant_id}'s token for "
                    f"{self._lock_wait_s:.1f}s",
                    vendor=VENDOR,
                )
            self._sleep(min(self._poll_s, left))

    def _refresh_holding_lock(self, tenant_id: int, owner: str) -> str:
        token_key, lock_key, _ = self.keys(tenant_id)
        try:
            grant = self._fetch(tenant_id)
        except BaseException:
            self._release(lock_key, owner, tenant_id)
            raise
        ttl_s = cache_ttl_s(
            grant.expires_in, margin_s=self._margin_s, jitter_s=self._jitter_s, rng=self._rng
        )
        try:
            self._store(
                keys=[token_key, lock_key], args=[owner, grant.access_token, int(ttl_s * 1000)]
            )
        except redis.RedisError as exc:  # the token is good; peers will fetch their own
            log.warning("crm_token.redis_unavailable", tenant_id=tenant_id, error=str(exc))
        log.info("crm_token.refreshed", tenant_id=tenant_id, cached_for_s=round(ttl_s, 1))
        return grant.access_token

    def _release(self, lock_key: str, owner: str, tenant_id: int) -> None:
        try:
            self._compare_and_delete(keys=[lock_key], args=[owner])
        except redis.RedisError as exc:  # the lock expires by itself
            log.warning("crm_token.redis_unavailable", tenant_id=tenant_id, error=str(exc))

    # -- credentials -----------------------------------------------------------------------

    def _fetch(self, tenant_id: int) -> TokenGrant:
        """Ask the endpoint with the last credential read; refused → re-read, try once more."""
        credential = self._credentials.get(tenant_id) or self._active_credential(tenant_id)
        try:
            grant = self._endpoint.request_token(tenant_id, credential.secret)
        except InputError as malformed:  # the stored credential lacks a field: a person must act
            raise self._give_up(tenant_id, credential, malformed) from None
        except VendorAuthError:
            log.warning(
                "crm_token.credentials_refused", tenant_id=tenant_id, credential_id=credential.id
            )
            self._credentials.pop(tenant_id, None)
            credential = self._active_credential(tenant_id)
            try:
                grant = self._endpoint.request_token(tenant_id, credential.secret)
            except (VendorAuthError, InputError) as again:
                raise self._give_up(tenant_id, credential, again) from None
        self._credentials[tenant_id] = credential
        return grant

    def _active_credential(self, tenant_id: int) -> Credential:
        """The stored credential; `AuthRequiredError` if there is none or it needs attention."""
        try:
            credential = self._read_credential(tenant_id)
        except InputError:
            raise _auth_required(tenant_id, "no crm credential is stored") from None
        if credential.needs_attention:
            raise _auth_required(tenant_id, credential.attention_reason or "needs attention")
        return credential

    def _check_attention(self, tenant_id: int, flagged: str) -> None:
        """Raise while the flagged credential still needs attention; else clear the flag."""
        credential = self._active_credential(tenant_id)
        self._credentials[tenant_id] = credential
        self._compare_and_delete(keys=[self.keys(tenant_id)[2]], args=[flagged])
        log.info("crm_token.credential_reactivated", tenant_id=tenant_id)

    def _give_up(
        self, tenant_id: int, credential: Credential, refusal: VendorAuthError | InputError
    ) -> AuthRequiredError:
        """Mark the credential, flag the tenant in Redis, and say that a person must act."""
        if isinstance(refusal, InputError):
            reason = f"AUTH_REQUIRED: {refusal.message}"
        else:
            vendor_error = refusal.details.get("vendor_error") or f"HTTP {refusal.status_code}"
            reason = (
                f"AUTH_REQUIRED: crm token endpoint refused the client credentials ({vendor_error})"
            )
        self._mark_attention(credential, reason)
        try:
            self._redis.set(self.keys(tenant_id)[2], _fingerprint(credential))
        except redis.RedisError as exc:  # the store's status still stops every fetch
            log.warning("crm_token.redis_unavailable", tenant_id=tenant_id, error=str(exc))
        log.error("crm_token.auth_required", tenant_id=tenant_id, credential_id=credential.id)
        return _auth_required(tenant_id, reason, status_code=getattr(refusal, "status_code", None))


def _auth_required(
    tenant_id: int, reason: str, *, status_code: int | None = None
) -> AuthRequiredError:
    return AuthRequiredError(
        f"crm: tenant {tenant_id} needs new client credentials ({reason}); "
        "store them with `pipeline credentials set`",
        vendor=VENDOR,
        status_code=status_code,
        details={"reason": reason},
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
