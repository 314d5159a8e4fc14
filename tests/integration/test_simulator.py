"""The vendor simulator through real HTTP: enrichment vendors, faults, stats, admin API.

CRM and ERP are in test_simulator_crm_erp.py. Each test starts its own `Simulator` on a
free loopback port; none needs Redis, Postgres or a worker.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from pipeline.simulator import Fault, Outage, Simulator, SimulatorAdmin

API_KEY = "test-key"


def headers(tenant: int) -> dict[str, str]:
    return {"X-Tenant-Id": str(tenant), "Authorization": f"Bearer {API_KEY}"}


def crawl(sim: Simulator, tenant: int = 1, domain: str = "acme.com", **kw: float) -> int:
    """Status of one crawl."""
    url = f"{sim.url}/crawler/crawl"
    return requests.get(url, params={"domain": domain}, headers=headers(tenant), **kw).status_code


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0, seed=7) as simulator:
        yield simulator


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- enrichment vendors ----------------------------------------------------------------------


def test_crawler_answers_several_pages_of_real_text(sim: Simulator) -> None:
    response = requests.get(
        f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, headers=headers(1)
    )

    assert response.status_code == 200
    body = response.json()
    assert body["domain"] == "acme.com"
    assert len(body["pages"]) >= 2
    assert body["pages"][0]["url"] == "https://acme.com/"
    assert body["text_length"] == sum(len(page["text"]) for page in body["pages"]) >= 500


def test_thin_fault_makes_the_crawler_answer_one_short_page(sim: Simulator) -> None:
    sim.set_fault(vendor="crawler", tenant=1, thin=True)

    thin = requests.get(
        f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, headers=headers(1)
    ).json()
    normal = requests.get(
        f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, headers=headers(2)
    ).json()

    assert len(thin["pages"]) == 1 and thin["text_length"] < 100
    assert normal["text_length"] >= 500
    assert sim.stats()["errors"] == {}  # thin is a poor answer, not a failed call


def test_search_answers_three_results(sim: Simulator) -> None:
    response = requests.post(
        f"{sim.url}/search/search", json={"query": "Acme Corp acme.com"}, headers=headers(1)
    )

    results = response.json()["results"]
    assert len(results) == 3
    assert all(set(result) == {"url", "title", "content"} for result in results)
    assert results[0]["url"] == "https://acme.com/"


def test_people_finders_are_deterministic_per_domain_and_differ_by_source(
    sim: Simulator,
) -> None:
    def people(source: str, domain: str) -> list[dict[str, str]]:
        response = requests.post(
            f"{sim.url}/{source}/contacts",
            json={"domain": domain, "name": "Acme"},
            headers=headers(1),
        )
        assert response.status_code == 200
        contacts: list[dict[str, str]] = response.json()["contacts"]
        return contacts

    apify = people("apify_linkedin", "acme.com")
    lusha = people("lusha", "acme.com")

    assert apify == people("apify_linkedin", "acme.com")
    assert 2 <= len(apify) <= 3 and 2 <= len(lusha) <= 3
    assert apify != lusha
    assert all(set(c) == {"name", "title", "email"} for c in apify + lusha)
    assert all(c["email"].endswith("@acme.com") for c in apify + lusha)
    assert people("lusha", "globex.io") != lusha


def test_zerobounce_gives_each_email_a_stable_status(sim: Simulator) -> None:
    emails = [f"person{n}@acme.com" for n in range(30)] + ["not-an-email"]

    def verify() -> list[dict[str, str]]:
        response = requests.post(
            f"{sim.url}/zerobounce/verify", json={"emails": emails}, headers=headers(1)
        )
        results: list[dict[str, str]] = response.json()["results"]
        return results

    results = verify()
    statuses = [result["status"] for result in results]
    assert [result["email"] for result in results] == emails
    assert set(statuses) <= {"valid", "invalid", "catch-all"}
    assert statuses.count("valid") > len(emails) // 2
    assert statuses[-1] == "invalid"
    assert verify() == results


def test_enrichment_vendors_want_an_api_key(sim: Simulator) -> None:
    response = requests.get(
        f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, headers={"X-Tenant-Id": "1"}
    )

    assert response.status_code == 401
    assert sim.stats()["errors"]["crawler"] == {"1": 1}


# -- faults ----------------------------------------------------------------------------------


def test_same_seed_gives_the_same_failure_sequence() -> None:
    def failures(seed: int) -> list[int]:
        with Simulator(seed=seed) as sim:
            sim.set_fault(vendor="crawler", error_rate=0.5)
            return [crawl(sim) for _ in range(30)]

    first = failures(seed=42)

    assert first == failures(seed=42)
    assert set(first) == {200, 503}
    assert first != failures(seed=43)


def test_a_fault_on_one_tenant_leaves_other_tenants_alone(sim: Simulator) -> None:
    sim.set_fault(vendor="crawler", tenant=1, error_rate=1.0, status=500)

    assert [crawl(sim, tenant=1) for _ in range(3)] == [500, 500, 500]
    assert [crawl(sim, tenant=2) for _ in range(3)] == [200, 200, 200]
    assert crawl(sim, tenant=1, domain="other.com") == 500


def test_tenant_specific_fault_wins_over_the_all_tenant_one(sim: Simulator) -> None:
    sim.set_fault(vendor="search", status=500)
    sim.set_fault(Fault(vendor="search", tenant=3, status=401))

    def search(tenant: int) -> int:
        url = f"{sim.url}/search/search"
        return requests.post(url, json={"query": "q"}, headers=headers(tenant)).status_code

    assert (search(3), search(4)) == (401, 500)


def test_rate_limit_carries_retry_after(sim: Simulator) -> None:
    sim.set_fault(vendor="crawler", status=429, retry_after=2)

    response = requests.get(
        f"{sim.url}/crawler/crawl", params={"domain": "acme.com"}, headers=headers(1)
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"] == "simulated_fault"


def test_a_hang_outlasts_the_client_read_timeout_without_blocking_stop() -> None:
    sim = Simulator().start()
    sim.set_fault(vendor="crawler", hang_s=2)
    started = time.monotonic()

    with pytest.raises(requests.ReadTimeout):
        crawl(sim, timeout=0.2)
    sim.stop()

    assert time.monotonic() - started < 1.0
    assert sim.stats()["errors"]["crawler"] == {"1": 1}


def test_drop_closes_the_connection_without_an_answer(sim: Simulator) -> None:
    sim.set_fault(vendor="lusha", tenant=1, drop=True)

    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sim.url}/lusha/contacts", json={"domain": "a.com"}, headers=headers(1))

    assert sim.stats()["errors"]["lusha"] == {"1": 1}


def test_outage_window_follows_the_injected_clock() -> None:
    clock = FakeClock(1_000.0)
    with Simulator(clock=clock) as sim:
        sim.set_fault(vendor="crawler", outage=Outage(start=1_100, end=1_200))
        before = crawl(sim)
        clock.now = 1_150
        during = crawl(sim)
        clock.now = 1_200
        after = crawl(sim)

    assert (before, during, after) == (200, 503, 200)


def test_latency_delays_every_answer(sim: Simulator) -> None:
    sim.set_fault(vendor="crawler", latency_ms=150)
    started = time.monotonic()

    assert crawl(sim) == 200
    assert time.monotonic() - started >= 0.15


def test_a_fault_for_an_unknown_vendor_is_refused(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown vendor 'crawlr'"):
        sim.set_fault(vendor="crawlr", error_rate=1.0)


# -- stats and admin -------------------------------------------------------------------------


def test_stats_count_calls_and_errors_per_vendor_and_tenant(sim: Simulator) -> None:
    sim.set_fault(vendor="crawler", tenant=2, status=503)
    for tenant in (1, 1, 2):
        crawl(sim, tenant=tenant)
    requests.post(f"{sim.url}/zerobounce/verify", json={"emails": []}, headers=headers(1))
    requests.get(f"{sim.url}/crawler/crawl", params={"domain": "x.com"}, headers={})
    SimulatorAdmin(sim.url).stats()  # admin calls are not counted

    stats = sim.stats()

    assert stats["calls"] == {"crawler": {"0": 1, "1": 2, "2": 1}, "zerobounce": {"1": 1}}
    assert stats["errors"] == {"crawler": {"0": 1, "2": 1}}  # tenant 0 sent no API key
    assert stats["duplicate_idempotency_keys"] == {} and stats["token_requests"] == {}


def test_admin_client_drives_the_simulator_over_http(sim: Simulator) -> None:
    admin = SimulatorAdmin(sim.url)

    admin.set_fault(vendor="crawler", tenant=1, status=500)
    assert admin.faults() == [Fault(vendor="crawler", tenant=1, status=500)]
    assert crawl(sim) == 500
    admin.clear_faults()
    assert crawl(sim) == 200
    assert admin.stats()["calls"]["crawler"] == {"1": 2}

    admin.register_crm_client(5, "client", "secret", expires_in=60)
    assert admin.register_erp_user(5, "odoo", "admin", "pw") == 2
    assert admin.erp_partners(5) == [] and admin.crm_contacts(5) == []
    admin.revoke_crm_tokens(5)

    admin.reset()
    assert admin.stats()["calls"] == {} and admin.faults() == []
    admin.close()


def test_admin_answers_a_malformed_fault_with_400(sim: Simulator) -> None:
    response = requests.post(
        f"{sim.url}/_admin/faults", json={"vendor": "crawler", "error_rate": 2}
    )

    assert response.status_code == 400
    assert "error_rate" in response.json()["message"]
    with pytest.raises(requests.HTTPError, match="unknown vendor"):
        SimulatorAdmin(sim.url).set_fault(vendor="nope")


def test_serve_runs_in_its_own_process_until_sigterm() -> None:
    code = "from pipeline.simulator import serve; serve(port=0, seed=5)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        url = re.search(r"http://\S+", ready)
        assert url, ready
        admin = SimulatorAdmin(url.group(0))
        admin.set_fault(vendor="crawler", tenant=1, status=503)
        status = requests.get(
            f"{admin.url}/crawler/crawl", params={"domain": "a.com"}, headers=headers(1)
        ).status_code
        assert status == 503
        assert admin.stats()["errors"] == {"crawler": {"1": 1}}
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=5)
    assert exit_code == 0
