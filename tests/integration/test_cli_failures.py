"""Failures a new user meets, each a one-line message saying what to do and a documented
exit code, never a traceback: a database not migrated, a CSV with a NUL byte or blank rows,
no simulator; and the CLI's own surface: --version, shell completion, `main()`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.support.cli import csv_file, pipeline
from tests.support.stack import throwaway_database


def one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed command, checked to be no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.usefixtures("integration_env")
def test_an_unmigrated_database_says_run_db_upgrade_everywhere(tmp_path: Path) -> None:
    with throwaway_database("pipeline_unmigrated", migrate=False) as url:
        env = {**os.environ, "DATABASE_URL": url}
        checked = pipeline("check", env=env)
        assert checked.returncode == 3, checked.stdout + checked.stderr
        assert "FAIL  database" in checked.stdout and "run `pipeline db upgrade`" in checked.stdout

        path = csv_file(tmp_path, "name,domain\nAcme,acme.com\n")
        for args in (
            ["enrich", "--tenant", "7", "--file", str(path)],
            ["runs", "list"],
            ["runs", "show", "0123abcd"],
            ["dlq", "list"],
            ["apikeys", "list"],
        ):
            line = one_line_failure(pipeline(*args, env=env), 3)
            assert line.startswith("pipeline: the database is not migrated"), line
            assert line.endswith("run `pipeline db upgrade`"), line

        upgraded = pipeline("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        again = pipeline("check", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "database" in again.stdout and "(migrated)" in again.stdout


@pytest.mark.usefixtures("integration_env")
def test_an_unreachable_database_is_exit_3_in_one_line() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/none"}
    line = one_line_failure(pipeline("runs", "list", env=env), 3)
    assert "the database is unreachable" in line and "DATABASE_URL" in line


@pytest.mark.usefixtures("integration_env")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,domain\nAc\x00me,acme.com\n", "line 2, column name: contains a NUL character"),
        ("name,domain\nAcme,acme.com\nB,b\x00.com\n", "line 3, column domain: contains a NUL"),
        ("name,domain\nAcme,acme.com,extra\n", "line 2: 3 cells, the header has 2"),
        ("name,name\nAcme,Acme\n", "a column is named twice"),
        ("id\n" + "9" * 30 + "\n", "line 2: id must be an integer from 1 to"),
        # an unclosed quote would swallow every later row into one cell
        ('name,domain\n"Beta,beta.com\nGamma,gamma.com\n', "not a CSV file (unexpected end"),
        ('name,domain\n"Beta"x,beta.com\n', "not a CSV file"),
    ],
    ids=["nul-in-name", "nul-in-domain", "extra-cell", "twice", "huge-id", "open-quote", "quote"],
)
def test_bad_csv_cells_name_line_and_column(tmp_path: Path, content: str, message: str) -> None:
    line = one_line_failure(
        pipeline("enrich", "--tenant", "7", "--file", str(csv_file(tmp_path, content))), 2
    )
    assert message in line, line
    assert "\x00" not in line


@pytest.mark.usefixtures("worker")
def test_whitespace_only_rows_become_data_empty_items(tmp_path: Path, tenant: int) -> None:
    """README: a row with neither name nor domain becomes an item failing DATA_EMPTY."""
    path = csv_file(tmp_path, f"name,domain\nAcme,acme-{tenant}.com\n   ,  \n\t,\n")
    result = pipeline("enrich", "--tenant", str(tenant), "--file", str(path), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 items: 1 succeeded, 0 degraded, 2 failed" in result.stdout
    assert result.stdout.count("DATA_EMPTY:no_domain_name") >= 2


def test_version_and_shell_completion() -> None:
    version = pipeline("--version")
    assert version.returncode == 0 and version.stdout.startswith("pipeline ")
    completion = pipeline(env={**os.environ, "_PIPELINE_COMPLETE": "bash_source"})
    assert completion.returncode == 0, completion.stderr
    assert "_pipeline_completion()" in completion.stdout
    assert "complete " in completion.stdout and "pipeline" in completion.stdout


def test_main_returns_exit_codes_for_tests_and_scripts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version"]) == 0
    assert main(["runs", "show"]) == 2  # a missing argument: Click's usage error
    assert main(["enrich", "--tenant", "-3", "--file", "x.csv"]) == 2
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "tenant must be a positive integer" in err and "No such command" in err
    assert all(line.startswith("pipeline: ") for line in err.strip().splitlines())


@pytest.mark.usefixtures("integration_env")
def test_a_plain_postgresql_url_reaches_the_database() -> None:
    """`postgresql://` is what most people write; SQLAlchemy 2.1 maps it to psycopg 3,
    which is not installed, so it must mean the psycopg2 driver we ship."""
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    assert url.startswith("postgresql://")
    for args in (["runs", "list"], ["db", "upgrade"], ["db", "upgrade", "--url", url]):
        result = pipeline(*args, env={**os.environ, "DATABASE_URL": url})
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.usefixtures("integration_env")
@pytest.mark.parametrize("url", ["nope", "mysql://a@b/c", "postgresql+psycopg://a@b/c"])
def test_a_database_url_that_cannot_work_is_exit_2_naming_it(url: str) -> None:
    line = one_line_failure(pipeline("runs", "list", env={**os.environ, "DATABASE_URL": url}), 2)
    assert "DATABASE_URL" in line and url not in line, line
    line = one_line_failure(pipeline("db", "upgrade", "--url", url), 2)
    assert "--url" in line and url not in line, line


def test_a_keep_logs_folder_that_cannot_be_made_is_exit_2(tmp_path: Path) -> None:
    a_file = csv_file(tmp_path, "name\nAcme\n")
    line = one_line_failure(pipeline("demo", "--keep-logs", str(a_file / "logs")), 2)
    assert "--keep-logs" in line and "cannot make that folder" in line, line
    assert str(a_file) not in line


@pytest.mark.usefixtures("integration_env")
def test_check_reaches_an_amqp_broker_too() -> None:
    """BROKER_URL may be amqp:// (settings allow it): check probes it with kombu, not as
    a Redis URL (which raised ValueError: exit 1, 'a bug')."""
    env = {**os.environ, "BROKER_URL": "amqp://guest@127.0.0.1:1//"}
    result = pipeline("check", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "FAIL  broker amqp://guest@127.0.0.1:1//: OperationalError" in result.stdout
    assert "ok    redis" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.usefixtures("integration_env")
def test_check_says_whether_the_secret_key_can_read_credentials() -> None:
    good = pipeline("check")
    assert "ok    PIPELINE_SECRET_KEY" in good.stdout, good.stdout
    bad_key = "not-a-fernet-key-but-a-secret-anyway"
    bad = pipeline("check", env={**os.environ, "PIPELINE_SECRET_KEY": bad_key})
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "FAIL  PIPELINE_SECRET_KEY: key 1 of 1 is not a Fernet key" in bad.stdout
    assert bad_key not in bad.stdout + bad.stderr
    unset = {k: v for k, v in os.environ.items() if k != "PIPELINE_SECRET_KEY"}
    missing = pipeline("check", env=unset)
    assert missing.returncode == 0, "enrichment runs without it: news, not a failure"
    assert "--    PIPELINE_SECRET_KEY not set" in missing.stdout
