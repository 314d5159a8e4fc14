"""What the API takes from outside, as types every route shares: each integer within the
range its column can hold, no bool taken for an integer, each string one Postgres can store.

Query and path values arrive as text and are parsed; bodies are validated strictly
(`pipeline.api.bodies`), so `"tenant": true` or `"id": 1.0` is refused, not read as 1.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field, StrictInt

MAX_BIGINT = 2**63 - 1  # ids and tenants are BIGINT columns
MAX_OFFSET = 1_000_000_000
TENANT_HELP = "required with an admin key; a tenant key's own tenant when left out"

# In a body.
TenantId = Annotated[StrictInt, Field(gt=0, le=MAX_BIGINT)]
RowId = Annotated[StrictInt, Field(gt=0, le=MAX_BIGINT)]

# In a query or a path.
TenantQuery = Annotated[int | None, Query(gt=0, le=MAX_BIGINT, description=TENANT_HELP)]
TenantPath = Annotated[int, Path(gt=0, le=MAX_BIGINT)]
RowIdPath = Annotated[int, Path(gt=0, le=MAX_BIGINT)]
PageLimit = Annotated[int, Query(ge=1, le=200, description="at most 200")]
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
VendorPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
