"""The chaos suite's own rules, checked without running it (it takes minutes): its settings
validate and never lead to the shared services, and its verdicts follow the definitions."""

from __future__ import annotations

import json

import pytest

from chaos.report import row_line, summary
from chaos.settings import LEASE_S, VISIBILITY_TIMEOUT_S, build_env
from chaos.trial import Row
from pipeline.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_env")
DB = "postgresql+psycopg2://postgres@127.0.0.1:40001/chaos"
SIM = "http://127.0.0.1:40002"


def test_the_chaos_settings_pass_validation_and_point_at_private_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in build_env(redis_port=40000, database_url=DB, simulator_url=SIM).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    longest = settings.max_retry_countdown_s + settings.task_time_limit_s
    assert longest < settings.broker_visibility_timeout_s == VISIBILITY_TIMEOUT_S
    assert set(settings.reconcile_lease_s.values()) == {LEASE_S}
    assert longest < LEASE_S
    assert settings.task_time_limit_s - 10 > settings.task_time_limit_s / 2, (
        "a CRM sync's time budget (half the hard limit) must end before the soft limit"
    )
    for url in (settings.broker_url, settings.result_backend, settings.redis_url):
        assert url.startswith("redis://127.0.0.1:40000/")
    assert settings.database_url == DB


@pytest.mark.parametrize(
    ("redis_port", "database_url", "named"),
    [
        (6379, DB, "BROKER_URL"),
        (40000, "postgresql+psycopg2://postgres@127.0.0.1:5432/chaos", "DATABASE_URL"),
        (40000, "postgresql+psycopg2://postgres@db.example:40001/chaos", "DATABASE_URL"),
    ],
)
def test_settings_that_could_reach_shared_services_are_refused(
    redis_port: int, database_url: str, named: str
) -> None:
    with pytest.raises(RuntimeError, match=named):
        build_env(redis_port=redis_port, database_url=database_url, simulator_url=SIM)


def test_the_leases_are_one_json_object_per_run_kind() -> None:
    env = build_env(redis_port=40000, database_url=DB, simulator_url=SIM)
    assert json.loads(env["RECONCILE_LEASE_S"]) == dict.fromkeys(
        ("enrichment", "crm_sync", "export"), LEASE_S
    )


def test_a_row_passes_only_with_nothing_lost_duplicated_stuck_or_unhealed() -> None:
    assert Row("ok", items=10, healed=2, deferred=2, settled=True).passed
    assert not Row("lost", items=10, lost=1).passed
    assert not Row("dup", items=10, duplicates=1).passed
    assert not Row("stuck", items=10, stuck=1).passed
    assert not Row("unhealed", items=10, healed=1, deferred=2).passed
    assert not Row("checked", items=10, failures=["the worker died"]).passed


def test_the_summary_line_adds_up_the_rows() -> None:
    rows = [
        Row("a", items=900, lost=2, stuck=1, healed=3, deferred=4, seconds=30.0, settled=True),
        Row("b", items=100, duplicates=5, healed=1, deferred=1, seconds=9.0, settled=True),
    ]
    assert summary(rows) == ("chaos: scenarios=2 items=1000 lost=2 duplicates=5 stuck=1 healed=4/5")


def test_a_row_shows_its_verdict_and_what_failed() -> None:
    line = row_line(Row("poison", items=10, seconds=130.2, failures=["the worker died"]))
    assert line.split()[:8] == ["poison", "10", "0", "0", "0", "0/0", ">130s", "FAIL"]
    assert line.endswith("FAIL: the worker died")


def test_chaos_list_names_every_scenario_and_an_unknown_one_is_refused() -> None:
    """`python -m chaos --list` (README) exits 0 naming each scenario; `--only` with a name
    it does not know stops before starting anything, exit 1, naming it."""
    import subprocess
    import sys

    from chaos.scenarios import SCENARIOS
    from tests.support.processes import REPO

    listed = subprocess.run(
        [sys.executable, "-m", "chaos", "--list"], cwd=REPO, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines() if line.strip()] == [
        s.name for s in SCENARIOS
    ]
    unknown = subprocess.run(
        [sys.executable, "-m", "chaos", "--only", "no-such"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1 and "no-such" in unknown.stderr
