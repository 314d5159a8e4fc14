"""The simulator's CRM (OAuth, idempotent upserts, batches) and ERP (Odoo XML-RPC), through
real HTTP. Each test starts its own `Simulator` on a free loopback port."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pipeline.simulator import Simulator

TENANT = 1


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(port=0, seed=3, clock=clock) as simulator:
        simulator.register_crm_client(TENANT, "client-1", "s3cret", expires_in=600)
        simulator.register_erp_user(TENANT, "acme-odoo", "admin", "pw")
        yield simulator


# -- CRM -------------------------------------------------------------------------------------


def credentials(secret: str = "s3cret") -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": "client-1", "client_secret": secret}


def token(sim: Simulator, tenant: int = TENANT, secret: str = "s3cret") -> requests.Response:
    """A token request with a form body, as OAuth clients usually send it."""
    form = credentials(secret)
    return requests.post(
        f"{sim.url}/crm/oauth/token", data=form, headers={"X-Tenant-Id": str(tenant)}
    )


def upsert(
    sim: Simulator,
    access_token: str,
    key: str,
    external_id: str,
    tenant: int = TENANT,
    timeout: float = 2,
) -> requests.Response:
    return requests.post(
        f"{sim.url}/crm/contacts/upsert",
        json={"external_id": external_id, "email": "jane@acme.com", "name": "Jane"},
        headers={
            "X-Tenant-Id": str(tenant),
            "Authorization": f"Bearer {access_token}",
            "Idempotency-Key": key,
        },
        timeout=timeout,
    )


def test_client_credentials_buy_a_token_that_upserts_contacts(sim: Simulator) -> None:
    grant = token(sim).json()
    first = upsert(sim, grant["access_token"], "k1", "ext-1")
    again = upsert(sim, grant["access_token"], "k2", "ext-1")

    assert grant["token_type"] == "bearer" and grant["expires_in"] == 600
    assert first.status_code == 200 and first.json()["created"] is True
    assert again.json() == {"id": first.json()["id"], "created": False}
    assert [c["external_id"] for c in sim.crm_contacts(TENANT)] == ["ext-1"]
    assert sim.stats()["token_requests"] == {"1": 1}


def test_token_endpoint_takes_json_and_refuses_unknown_clients(sim: Simulator) -> None:
    json_grant = requests.post(
        f"{sim.url}/crm/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": "s3cret",
        },
        headers={"X-Tenant-Id": "1"},
    )

    assert json_grant.status_code == 200
    assert token(sim, secret="wrong").status_code == 400  # RFC 6749 §5.2
    assert token(sim, secret="wrong").json() == {"error": "invalid_client"}
    assert token(sim, tenant=2).status_code == 400  # client-1 belongs to tenant 1 only


def test_revoked_expired_and_foreign_tokens_are_401(sim: Simulator, clock: FakeClock) -> None:
    access_token = token(sim).json()["access_token"]
    assert upsert(sim, access_token, "k1", "ext-1", tenant=2).status_code == 401

    sim.revoke_crm_tokens(TENANT)
    assert upsert(sim, access_token, "k1", "ext-1").status_code == 401

    fresh = token(sim).json()["access_token"]
    assert upsert(sim, fresh, "k1", "ext-1").status_code == 200
    clock.now += 600
    assert upsert(sim, fresh, "k2", "ext-2").json()["message"] == "access token expired"


def test_a_repeated_idempotency_key_replays_the_first_answer(sim: Simulator) -> None:
    access_token = token(sim).json()["access_token"]

    first = upsert(sim, access_token, "same-key", "ext-9")
    replay = upsert(sim, access_token, "same-key", "ext-9")

    assert replay.json() == first.json() == {"id": first.json()["id"], "created": True}
    assert sim.stats()["duplicate_idempotency_keys"] == {"1": 1}
    assert len(sim.crm_contacts(TENANT)) == 1


def test_a_hang_without_status_does_the_work_and_loses_the_answer(sim: Simulator) -> None:
    access_token = token(sim).json()["access_token"]
    sim.set_fault(vendor="crm", tenant=TENANT, hang_s=0.5)

    with pytest.raises(requests.ReadTimeout):
        upsert(sim, access_token, "k-lost", "ext-1", timeout=0.1)
    sim.clear_faults()
    retry = upsert(sim, access_token, "k-lost", "ext-1")

    assert retry.json()["created"] is True  # the first answer, replayed
    assert sim.stats()["duplicate_idempotency_keys"] == {"1": 1}
    assert len(sim.crm_contacts(TENANT)) == 1


def test_batch_rejects_scripted_records_and_keeps_the_rest(sim: Simulator) -> None:
    access_token = token(sim).json()["access_token"]
    sim.set_fault(vendor="crm", tenant=TENANT, reject_records=["ext-3"])
    records = [
        {"idempotency_key": f"b-{n}", "external_id": f"ext-{n}", "email": f"p{n}@acme.com"}
        for n in (1, 2, 3)
    ] + [{"idempotency_key": "b-4", "external_id": "ext-4", "email": "broken"}]

    response = requests.post(
        f"{sim.url}/crm/contacts/batch",
        json={"records": records},
        headers={"X-Tenant-Id": "1", "Authorization": f"Bearer {access_token}"},
    )

    results = response.json()["results"]
    assert response.status_code == 200
    assert [r["ok"] for r in results] == [True, True, False, False]
    assert results[2]["error"] == "validation" and "ext-3" in results[2]["message"]
    assert results[3]["idempotency_key"] == "b-4" and "broken" in results[3]["message"]
    assert [c["external_id"] for c in sim.crm_contacts(TENANT)] == ["ext-1", "ext-2"]


def lookup(sim: Simulator, access_token: str, keys: list[str], tenant: int = TENANT) -> Any:
    return requests.post(
        f"{sim.url}/crm/contacts/lookup",
        json={"idempotency_keys": keys},
        headers={"X-Tenant-Id": str(tenant), "Authorization": f"Bearer {access_token}"},
        timeout=2,
    )


def test_a_lookup_says_which_idempotency_keys_were_applied_even_when_the_answer_was_lost(
    sim: Simulator,
) -> None:
    access_token = token(sim).json()["access_token"]
    sim.set_fault(vendor="crm", tenant=TENANT, hang_s=0.5)
    with pytest.raises(requests.ReadTimeout):
        upsert(sim, access_token, "k-lost", "ext-1", timeout=0.1)
    sim.clear_faults()
    batch = requests.post(
        f"{sim.url}/crm/contacts/batch",
        json={"records": [{"idempotency_key": "b-1", "external_id": "ext-2"}]},
        headers={"X-Tenant-Id": "1", "Authorization": f"Bearer {access_token}"},
    )
    assert batch.status_code == 200
    calls_before = sim.stats()["calls"]["crm"]["1"]

    answer = lookup(sim, access_token, ["k-lost", "never-sent", "b-1"]).json()

    ids = {c["external_id"]: c["id"] for c in sim.crm_contacts(TENANT)}
    assert answer == {
        "applied": [
            {"idempotency_key": "k-lost", "id": ids["ext-1"], "created": True},
            {"idempotency_key": "b-1", "id": ids["ext-2"], "created": True},
        ],
        "unknown": ["never-sent"],
    }
    assert sim.stats()["calls"]["crm"]["1"] == calls_before + 1, "a lookup is a call"
    assert sim.stats()["duplicate_idempotency_keys"] == {}, "and not a write"


def test_a_lookup_is_per_tenant_authorized_and_subject_to_faults(sim: Simulator) -> None:
    access_token = token(sim).json()["access_token"]
    upsert(sim, access_token, "k-1", "ext-1")
    sim.register_crm_client(2, "client-1", "s3cret")
    other = token(sim, tenant=2).json()["access_token"]
    assert lookup(sim, other, ["k-1"], tenant=2).json() == {"applied": [], "unknown": ["k-1"]}
    assert lookup(sim, "not-a-token", ["k-1"]).status_code == 401
    assert lookup(sim, access_token, [""]).status_code == 400
    sim.set_fault(vendor="crm", tenant=TENANT, status=503)
    assert lookup(sim, access_token, ["k-1"]).status_code == 503


def test_a_down_crm_fails_every_call_including_tokens(sim: Simulator) -> None:
    sim.set_fault(vendor="crm", tenant=TENANT, down=True)

    assert token(sim).status_code == 503
    assert token(sim, tenant=2).status_code == 400  # tenant 2 reaches the CRM (no client)
    assert sim.stats()["errors"]["crm"] == {"1": 1, "2": 1}


# -- ERP -------------------------------------------------------------------------------------


def erp(sim: Simulator, service: str, tenant: int = TENANT) -> Any:
    return xmlrpc.client.ServerProxy(
        f"{sim.url}/erp/xmlrpc/2/{service}",
        headers=[("X-Tenant-Id", str(tenant))],
        allow_none=True,
    )


def test_erp_authenticates_and_creates_searches_writes_reads(sim: Simulator) -> None:
    common, models = erp(sim, "common"), erp(sim, "object")
    uid = common.authenticate("acme-odoo", "admin", "pw", {})

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return models.execute_kw("acme-odoo", uid, "pw", "res.partner", method, args, kwargs)

    partner_id = call("create", {"name": "Acme", "ref": "ext-1"})
    assert call("search", [["ref", "=", "ext-1"]]) == [partner_id]
    assert call("search", [["ref", "=", "ext-2"]]) == []
    assert call("write", [partner_id], {"email": "info@acme.com"}) is True
    assert call("read", [partner_id], fields=["email"]) == [
        {"id": partner_id, "email": "info@acme.com"}
    ]

    assert common.authenticate("acme-odoo", "admin", "wrong", {}) is False
    assert sim.erp_partners(TENANT) == [
        {"id": partner_id, "name": "Acme", "ref": "ext-1", "email": "info@acme.com"}
    ]
    assert sim.erp_partners(2) == []


def test_erp_unknown_database_is_a_fault(sim: Simulator) -> None:
    with pytest.raises(xmlrpc.client.Fault, match=r'database "nope" does not exist'):
        erp(sim, "common").authenticate("nope", "admin", "pw", {})
    with pytest.raises(xmlrpc.client.Fault, match="does not exist"):
        erp(sim, "common", tenant=2).authenticate("acme-odoo", "admin", "pw", {})


def test_erp_rejected_field_is_a_fault_naming_the_field(sim: Simulator) -> None:
    sim.set_fault(vendor="erp", tenant=TENANT, erp_reject_fields=["autopost_bills", "website"])
    models = erp(sim, "object")
    uid = erp(sim, "common").authenticate("acme-odoo", "admin", "pw", {})

    with pytest.raises(xmlrpc.client.Fault) as refused:
        models.execute_kw(
            "acme-odoo", uid, "pw", "res.partner", "create", [{"name": "A", "website": "a.com"}]
        )
    created = models.execute_kw("acme-odoo", uid, "pw", "res.partner", "create", [{"name": "A"}])

    assert "Invalid field 'website' on model 'res.partner'" in refused.value.faultString
    assert isinstance(created, int)
    assert sim.stats()["errors"] == {}  # a Fault is an HTTP 200, as in Odoo


def test_a_down_erp_answers_503(sim: Simulator) -> None:
    sim.set_fault(vendor="erp", down=True)

    with pytest.raises(xmlrpc.client.ProtocolError) as down:
        erp(sim, "common").authenticate("acme-odoo", "admin", "pw", {})

    assert down.value.errcode == 503
