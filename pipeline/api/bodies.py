"""A request's JSON body, read on the event loop but parsed and validated in a worker thread.

FastAPI parses a body parameter (`json.loads`, then pydantic) on the event loop, so a big
body stalls every other request of the process meanwhile — `/health` included. A route
takes its body as a dependency instead, `body: Annotated[Model, Depends(JsonBody(Model))]`:
the bytes are awaited (bounded by `pipeline.api.limits`), then pydantic's own JSON parser
validates them in the threadpool, strictly (no `true` for 1, no `"1"` for 1), as JSON
(a UUID or a date is its string).

The body is parsed as JSON whatever its `Content-Type` says. Not JSON at all (malformed,
not UTF-8, nested over 200 deep) is a 400; JSON that fails validation is a 422 naming each
field, as for a body parameter. The route's `openapi_extra` documents the body; its models'
schemas join the app's components through `register_schemas`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

_REF = "#/components/schemas/{model}"


class JsonBody:
    """A dependency that answers the request's body validated as `model`."""

    # Model schemas (`$defs`) of every JsonBody made, for the OpenAPI components.
    schemas: dict[str, Any] = {}

    def __init__(self, model: Any, *, examples: list[Any] | None = None) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        schema = self.adapter.json_schema(ref_template=_REF)
        JsonBody.schemas.update(schema.pop("$defs", {}))
        if examples:
            schema["examples"] = examples
        self.openapi: dict[str, Any] = {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        }

    async def __call__(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "a JSON body is required"}]
            )
        return await anyio.to_thread.run_sync(self._validate, raw, limiter=_parsers())

    def _validate(self, raw: bytes) -> Any:
        try:
            return self.adapter.validate_json(raw, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in errors]
            ) from None


@cache
def _parsers() -> anyio.CapacityLimiter:
    """One body parsed at a time per process: parsing holds the GIL for long stretches, and
    each thread doing it more is one more the event loop waits behind."""
    return anyio.CapacityLimiter(1)


def register_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """`openapi` with the schemas of the models JSON bodies use among its components."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in JsonBody.schemas.items():
        components.setdefault(name, schema)
    return openapi
