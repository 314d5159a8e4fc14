"""Single-flight across real OS processes: 16 workers needing a CRM token for each of two
tenants at the same moment make one token request per tenant, and all get the same token.

Children come from a `forkserver` (see test_breaker_processes.py). They are handed the
environment explicitly: the forkserver may have been started by an earlier test, before
this test's PIPELINE_SECRET_KEY existed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from pipeline.credentials import put_credential
from pipeline.settings import get_settings
from pipeline.simulator import Simulator

CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload([__name__])
WORKERS = 16


def need_tokens(results: Any, barrier: Any, env: dict[str, str], tenants: list[int]) -> None:
    """One worker: wait for all, then ask for each tenant's token (module level: the
    forkserver imports it)."""
    os.environ.update(env)
    get_settings.cache_clear()
    from pipeline.vendors.crm import CrmClient

    tokens = CrmClient(get_settings()).tokens
    barrier.wait(timeout=30)
    try:
        results.put({tenant: tokens.token(tenant) for tenant in tenants})
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def env(
    integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("PIPELINE_SECRET_KEY", key)
    get_settings.cache_clear()
    yield {**integration_env, "PIPELINE_SECRET_KEY": key}
    monkeypatch.undo()
    get_settings.cache_clear()


def test_sixteen_processes_make_one_token_request_per_tenant(
    env: dict[str, str], simulator: Simulator, tenant: int
) -> None:
    tenants = [tenant, tenant + 1]
    for t in tenants:
        simulator.register_crm_client(t, f"client-{t}", f"secret-{t}")
        put_credential(t, "crm", {"client_id": f"client-{t}", "client_secret": f"secret-{t}"})

    results = CTX.Queue()
    barrier = CTX.Barrier(WORKERS)
    procs = [
        # Half ask for the tenants in the other order, so both refreshes overlap.
        CTX.Process(target=need_tokens, args=(results, barrier, env, tenants[:: 1 - 2 * (i % 2)]))
        for i in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)

    assert all(isinstance(a, dict) for a in answers), answers
    requests = simulator.stats()["token_requests"]
    for t in tenants:
        assert requests.get(str(t)) == 1, f"tenant {t}: one request for {WORKERS} workers"
        assert len({answer[t] for answer in answers}) == 1, "every worker got the same token"
    assert answers[0][tenants[0]] != answers[0][tenants[1]]
