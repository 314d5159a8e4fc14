"""The API fuzzed against its own OpenAPI document: schemathesis generates requests for
every operation — valid ones and, from the same schema, invalid ones — and sends each to a
live `pipeline api` (uvicorn on loopback, real Postgres, Redis and broker) once with a
tenant key and once with an admin key. Any finding fails the test:

- `not_a_server_error`: no 5xx, ever (503 is no excuse here: every dependency is up);
- `status_code_conformance`: every status answered is documented for the operation;
- `content_type_conformance`, `response_schema_conformance`: every answer, error or not,
  has the documented content type and shape (errors: the one error body).

Bounded and reproducible: `MAX_EXAMPLES` per operation, derandomized (Hypothesis draws
from a seed fixed by the test), no example database carried between runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api_server import ApiServer, create_key

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(
    integration_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path_factory.mktemp("fuzz") / "api.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_keys(fuzzed_server: ApiServer) -> dict[str, str]:
    """A tenant key whose tenant has a run (so reads answer something), and an admin key."""
    tenant_key = create_key("--tenant", "424242", "--name", "fuzz")
    answer = requests.post(
        f"{fuzzed_server.url}/runs",
        json={"kind": "enrichment", "companies": [{"name": "Fuzz Co", "domain": "fuzz.example"}]},
        headers={"X-API-Key": tenant_key},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return {"tenant": tenant_key, "admin": create_key("--admin", "--name", "fuzz")}


def fuzz_operation(operation: Any, mode: GenerationMode, keys: list[str], sent: list[int]) -> None:
    """Run `MAX_EXAMPLES` generated cases of `operation` in `mode`, each with every key."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def answers_as_documented(case: Any) -> None:
        for key in keys:
            case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS, timeout=30)
            sent.append(1)

    try:
        answers_as_documented()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, "only an operation with no input has no invalid one"


def test_the_api_answers_every_generated_request_as_documented(
    fuzzed_server: ApiServer, api_keys: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    started, sent = time.monotonic(), []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, list(api_keys.values()), sent)
    print(
        f"\nschemathesis: {len(operations)} operations, {len(sent)} requests "
        f"in {time.monotonic() - started:.1f} s"
    )
