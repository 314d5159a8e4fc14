"""Text from outside that Postgres can store, checked where it comes in.

Postgres `text` and `varchar` cannot hold a NUL character, and psycopg2 cannot encode a
lone surrogate (which JSON's `\\ud800` escapes can produce): either, reaching a query,
is an exception far from the caller who sent it. So every string that may be stored is
refused at the edge with a reason that names no value — by pydantic models through
`Storable`, by plain code through `unstorable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

NUL_FREE_PATTERN = "^[^\\x00]*$"  # for the OpenAPI/JSON schema: what a client may send


def unstorable(value: str) -> str | None:
    """Why Postgres could not store `value` (a message without the value), or None."""
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it has a lone surrogate)"
    return None


def _storable(value: str) -> str:
    reason = unstorable(value)
    if reason is not None:
        raise ValueError(reason)
    return value


@dataclass(frozen=True)
class Storable:
    """Annotated metadata for a `str` Postgres can store, after any length bound (so the
    bound is checked as a string's): `Annotated[str, Field(max_length=255), Storable()]`.
    Its JSON schema says so with a `pattern`, so a client (or a fuzzer) can know."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_storable, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = NUL_FREE_PATTERN
        return json_schema
