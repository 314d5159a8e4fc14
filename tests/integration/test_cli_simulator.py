"""`pipeline simulator fault set|list|clear` against a real `pipeline simulator` process:
a fault set from the shell makes the vendor fail, and clearing it makes it answer again."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.support.cli import PIPELINE_SCRIPT, pipeline
from tests.support.processes import REPO


@pytest.fixture
def simulator_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [PIPELINE_SCRIPT, "simulator", "--port", "0", "--seed", "3"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once it listens
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert found, first
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def crawl(url: str, tenant: int) -> int:
    answer = requests.get(
        f"{url}/crawler/crawl",
        params={"domain": "acme.com"},
        headers={"X-Tenant-Id": str(tenant), "Authorization": "Bearer test-key"},
        timeout=10,
    )
    return answer.status_code


def test_faults_are_set_listed_and_cleared_from_the_shell(simulator_url: str) -> None:
    assert crawl(simulator_url, 7) == 200
    url = ["--url", simulator_url]
    made = pipeline("simulator", "fault", "set", "--vendor", "crawler", "--tenant", "7",
                    "--down", "--status", "502", *url)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "fault set: vendor crawler, tenant 7: status=502 down=True" in made.stdout
    assert crawl(simulator_url, 7) == 502
    assert crawl(simulator_url, 8) == 200, "another tenant's calls are untouched"

    also = pipeline("simulator", "fault", "set", "--vendor", "crm", "--error-rate", "0.5", *url)
    assert also.returncode == 0, also.stderr
    shown = pipeline("simulator", "fault", "list", *url)
    assert shown.returncode == 0
    assert shown.stdout.splitlines() == [
        "vendor crawler, tenant 7: status=502 down=True",
        "vendor crm, all tenants: error_rate=0.5",
    ]

    cleared = pipeline("simulator", "fault", "clear", "--vendor", "crawler", "--tenant", "7", *url)
    assert cleared.returncode == 0 and "fault cleared" in cleared.stdout
    assert crawl(simulator_url, 7) == 200
    again = pipeline("simulator", "fault", "clear", "--vendor", "crawler", "--tenant", "7", *url)
    assert again.returncode == 2 and "no fault is set for that vendor and tenant 7" in again.stderr

    assert pipeline("simulator", "fault", "clear", "--all", *url).returncode == 0
    assert pipeline("simulator", "fault", "list", *url).stdout.strip() == "no faults"


def test_fault_commands_refuse_clearly(simulator_url: str) -> None:
    unknown = pipeline("simulator", "fault", "set", "--vendor", "nosuch", "--down",
                       "--url", simulator_url)  # fmt: skip
    assert unknown.returncode == 2 and "the simulator refused" in unknown.stderr
    assert "unknown vendor" in unknown.stderr
    odd = pipeline("simulator", "fault", "set", "--vendor", "<img src=x>", "--url", simulator_url)
    assert odd.returncode == 2 and "<img" not in odd.stderr
    rate = pipeline("simulator", "fault", "set", "--vendor", "crm", "--error-rate", "2")
    assert rate.returncode == 2 and "--error-rate" in rate.stderr
    neither = pipeline("simulator", "fault", "clear", "--url", simulator_url)
    assert neither.returncode == 2 and "give --vendor" in neither.stderr


def test_no_simulator_running_names_how_to_start_one() -> None:
    env = {**os.environ, "VENDOR_BASE_URL": "http://127.0.0.1:1"}
    result = pipeline("simulator", "fault", "list", env=env)
    assert result.returncode == 3
    assert "no simulator answers" in result.stderr
    assert "pipeline simulator --port 8700" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def crm_token_status(url: str, tenant: int, client_id: str, secret: str) -> int:
    answer = requests.post(
        f"{url}/crm/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers={"X-Tenant-Id": str(tenant)},
        timeout=10,
    )
    return answer.status_code


def erp_login(url: str, tenant: int, db: str, login: str, password: str) -> object:
    import xmlrpc.client

    headers = [("X-Tenant-Id", str(tenant))]
    transport = xmlrpc.client.Transport(headers=headers)
    common = xmlrpc.client.ServerProxy(f"{url}/erp/xmlrpc/2/common", transport=transport)
    return common.authenticate(db, login, password, {})


@pytest.mark.usefixtures("integration_env")
def test_register_makes_the_simulator_accept_the_stored_credentials(
    simulator_url: str, tenant: int
) -> None:
    from pipeline.credentials import put_credential

    url = ["--url", simulator_url]
    nothing = pipeline("simulator", "register", "--tenant", str(tenant), *url)
    assert nothing.returncode == 2
    assert f"tenant {tenant} has no crm or erp credential stored" in nothing.stderr

    put_credential(tenant, "crm", {"client_id": "acme", "client_secret": "s3cret"})
    put_credential(tenant, "erp", {"db": "acme", "login": "bot", "password": "pw"})
    assert crm_token_status(simulator_url, tenant, "acme", "s3cret") == 400  # unknown client
    made = pipeline("simulator", "register", "--tenant", str(tenant), *url)
    assert made.returncode == 0, made.stderr
    assert f"accepts tenant {tenant}'s CRM client and ERP user" in made.stdout
    assert "s3cret" not in made.stdout + made.stderr and "pw" not in made.stdout
    assert crm_token_status(simulator_url, tenant, "acme", "s3cret") == 200
    assert crm_token_status(simulator_url, tenant, "acme", "wrong") == 400
    assert erp_login(simulator_url, tenant, "acme", "bot", "pw") not in (False, None)

    put_credential(tenant, "crm", {"client_id": "acme"})  # a secret missing
    partial = pipeline("simulator", "register", "--tenant", str(tenant), *url)
    assert partial.returncode == 2 and "has no client_secret" in partial.stderr


def test_a_port_in_use_is_exit_3_in_one_line(simulator_url: str) -> None:
    port = simulator_url.rsplit(":", 1)[1]
    result = pipeline("simulator", "--port", port, timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"pipeline: DEPENDENCY_UNAVAILABLE: cannot listen on port {port} "
        "(Address already in use): stop what holds it, or pass another --port"
    ]
