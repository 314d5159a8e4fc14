"""Who is calling: an API key (`X-API-Key`) turned into a `Caller`, for every endpoint.

A tenant key acts on its own tenant only. Asking for another tenant — by a run id, a path,
a query or a body — answers 404 exactly as for something that does not exist, so a tenant
cannot learn which ids or tenants exist. An admin key acts on every tenant. Admin-only
endpoints answer 403 to a tenant key: the endpoint is public knowledge, no id is at stake.

Keys that authenticated are remembered for `API_KEY_CACHE_S` (`pipeline.api_keys.KeyCache`):
one per process, or the app's own if it carries one in `app.state.key_cache` (a test, on a
fake clock). So a key used recently still works while Postgres is down; a revoked key stops
working within that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from pipeline.api_keys import KeyCache, authenticate
from pipeline.errors import ForbiddenError, NotFoundError, UnauthorizedError

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="a key from `pipeline apikeys create --tenant T` (or `--admin`)",
)
key_cache = KeyCache()


@dataclass(frozen=True)
class Caller:
    key_id: int
    tenant_id: int | None  # None: an admin key

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def sees(self, tenant_id: int) -> bool:
        return self.is_admin or tenant_id == self.tenant_id

    def tenant_scope(self, requested: int | None) -> int | None:
        """The tenant a request acts on: for an admin, the one asked for (None: all); for a
        tenant key, its own — and another tenant asked for is not found."""
        if self.is_admin:
            return requested
        if requested is not None and requested != self.tenant_id:
            raise NotFoundError("no such tenant", details={"field": "tenant"})
        return self.tenant_id


def authenticated(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> Caller:
    if not key:
        raise UnauthorizedError("an API key is required in the X-API-Key header")
    found = authenticate(key, cache=getattr(request.app.state, "key_cache", key_cache))
    if found is None:
        raise UnauthorizedError("the API key is not valid (unknown or revoked)")
    return Caller(key_id=found.id, tenant_id=None if found.is_admin else found.tenant_id)


def admin_only(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if not caller.is_admin:
        raise ForbiddenError("this needs an admin key")
    return caller


AnyCaller = Annotated[Caller, Depends(authenticated)]
AdminCaller = Annotated[Caller, Depends(admin_only)]
