"""The admin API under `/_admin/`: the Simulator's Python methods, over HTTP.

For a simulator running in another process (the demo, benchmarks, `pipeline simulator`);
`SimulatorAdmin` is its client. Bodies are the pydantic models below, shared by both sides.
A malformed body is a 400 naming the problem; admin requests are never counted as calls.
Only loopback clients may use it (403 otherwise): whoever can reach it can script any
vendor's behaviour, so a simulator listening on all interfaces still keeps it local.

    GET    /_admin/stats                  -> the stats dict
    GET    /_admin/faults                 -> [fault, ...]
    POST   /_admin/faults      Fault      -> 204
    DELETE /_admin/faults                 -> 204 (all faults cleared)
    DELETE /_admin/faults?vendor=V[&tenant=N]
                                          -> 204 (that one cleared), 404 if none is set
    POST   /_admin/reset                  -> 204 (faults, stats, tokens, CRM and ERP data)
    POST   /_admin/crm/clients CrmClient  -> 204
    POST   /_admin/crm/revoke  TenantRef  -> 204
    GET    /_admin/crm/contacts?tenant=N  -> {"contacts": [...]}
    POST   /_admin/erp/users   ErpUser    -> {"uid": n}
    GET    /_admin/erp/partners?tenant=N  -> {"partners": [...]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.simulator.crm import DEFAULT_TOKEN_TTL_S
from pipeline.simulator.faults import Fault
from pipeline.simulator.messages import Answer, Call, Refusal

if TYPE_CHECKING:
    from pipeline.simulator.simulator import Simulator

ADMIN_PREFIX = "/_admin/"


class TenantRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: int


class CrmClient(TenantRef):
    client_id: str
    client_secret: str
    expires_in: int = DEFAULT_TOKEN_TTL_S


class ErpUser(TenantRef):
    db: str
    login: str
    password: str


AdminEndpoint = Callable[["Simulator", Call], Answer]


def _stats(sim: Simulator, request: Call) -> Answer:
    return Answer.json(sim.stats())


def _faults(sim: Simulator, request: Call) -> Answer:
    return Answer.json([fault.model_dump(mode="json") for fault in sim.faults()])


def _set_fault(sim: Simulator, request: Call) -> Answer:
    sim.set_fault(Fault.model_validate(request.json()))
    return Answer.empty()


class FaultRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vendor: str
    tenant: int | None = None


def _clear_faults(sim: Simulator, request: Call) -> Answer:
    if not request.query:
        sim.clear_faults()
        return Answer.empty()
    ref = FaultRef.model_validate(request.query)
    if not sim.clear_fault(ref.vendor, ref.tenant):
        return Answer.json({"error": "not_found", "message": "no such fault is set"}, status=404)
    return Answer.empty()


def _reset(sim: Simulator, request: Call) -> Answer:
    sim.reset()
    return Answer.empty()


def _register_crm_client(sim: Simulator, request: Call) -> Answer:
    client = CrmClient.model_validate(request.json())
    sim.register_crm_client(
        client.tenant, client.client_id, client.client_secret, expires_in=client.expires_in
    )
    return Answer.empty()


def _revoke_crm_tokens(sim: Simulator, request: Call) -> Answer:
    sim.revoke_crm_tokens(TenantRef.model_validate(request.json()).tenant)
    return Answer.empty()


def _crm_contacts(sim: Simulator, request: Call) -> Answer:
    tenant = TenantRef.model_validate(request.query).tenant
    return Answer.json({"contacts": sim.crm_contacts(tenant)})


def _register_erp_user(sim: Simulator, request: Call) -> Answer:
    user = ErpUser.model_validate(request.json())
    uid = sim.register_erp_user(user.tenant, user.db, user.login, user.password)
    return Answer.json({"uid": uid})


def _erp_partners(sim: Simulator, request: Call) -> Answer:
    tenant = TenantRef.model_validate(request.query).tenant
    return Answer.json({"partners": sim.erp_partners(tenant)})


ADMIN_ENDPOINTS: dict[tuple[str, str], AdminEndpoint] = {
    ("GET", "/_admin/stats"): _stats,
    ("GET", "/_admin/faults"): _faults,
    ("POST", "/_admin/faults"): _set_fault,
    ("DELETE", "/_admin/faults"): _clear_faults,
    ("POST", "/_admin/reset"): _reset,
    ("POST", "/_admin/crm/clients"): _register_crm_client,
    ("POST", "/_admin/crm/revoke"): _revoke_crm_tokens,
    ("GET", "/_admin/crm/contacts"): _crm_contacts,
    ("POST", "/_admin/erp/users"): _register_erp_user,
    ("GET", "/_admin/erp/partners"): _erp_partners,
}


def admin_answer(
    sim: Simulator, method: str, path: str, query: dict[str, str], body: bytes
) -> Answer:
    endpoint = ADMIN_ENDPOINTS.get((method, path))
    if endpoint is None:
        return Answer.json({"error": "not_found", "message": f"{method} {path}"}, status=404)
    request = Call(tenant=0, method=method, path=path, query=query, headers={}, body=body)
    try:
        return endpoint(sim, request)
    except Refusal as refusal:
        return refusal.answer()
    except (ValidationError, ValueError) as exc:
        return Answer.json({"error": "bad_request", "message": str(exc)}, status=400)
