"""`pipeline credentials` as an operator meets it: a real subprocess on the test database,
secrets read from stdin or the environment and never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from pipeline.credentials import get_credential
from pipeline.settings import get_settings
from tests.support.processes import REPO

SECRET = "s3cr3t-Value-42"


def credentials(
    *args: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "credentials", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(
    integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The test settings plus a fresh PIPELINE_SECRET_KEY, in the subprocess and here."""
    engine = create_engine(integration_env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM credentials"))
    engine.dispose()
    monkeypatch.setenv("PIPELINE_SECRET_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()
    yield dict(os.environ)
    monkeypatch.undo()
    get_settings.cache_clear()


def test_set_from_stdin_list_masked_then_delete(env: dict[str, str], tenant: int) -> None:
    stored = credentials(
        "set", "--tenant", str(tenant), "--vendor", "crm",
        "--field", "client_id=acme-client", "--field", "client_secret=@-",
        "--field", "refresh_hint=@env:CRM_HINT",
        env={**env, "CRM_HINT": "from-env"}, stdin=f"{SECRET}\n",
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert "stored credential" in stored.stdout and "client_secret" in stored.stdout
    assert SECRET not in stored.stdout + stored.stderr

    secret = get_credential(tenant, "crm").secret
    assert dict(secret) == {
        "client_id": "acme-client",
        "client_secret": SECRET,
        "refresh_hint": "from-env",
    }

    listed = credentials("list", "--tenant", str(tenant), env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"{tenant}  crm" in listed.stdout and "active" in listed.stdout
    assert "client_id, client_secret, refresh_hint" in listed.stdout
    for value in (SECRET, "acme-client", "from-env"):
        assert value not in listed.stdout + listed.stderr

    rotated = credentials("rotate", env=env)
    assert (rotated.returncode, "re-encrypted 1 credentials" in rotated.stdout) == (0, True)

    deleted = credentials("delete", "--tenant", str(tenant), "--vendor", "crm", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert credentials("list", "--tenant", str(tenant), env=env).stdout.strip() == (
        "no credentials"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--field", SECRET], "--field number 1 is not NAME=VALUE"),
        (["--field", "client_secret=@env:NOT_SET_ANYWHERE"], "'NOT_SET_ANYWHERE' is not set"),
        (["--field", "client_secret="], "'client_secret' is empty"),
    ],
    ids=["no-equals", "unset-env", "empty-value"],
)
def test_a_bad_field_exits_2_with_a_message_and_no_traceback(
    env: dict[str, str], tenant: int, args: list[str], message: str
) -> None:
    result = credentials("set", "--tenant", str(tenant), "--vendor", "crm", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_deleting_an_unknown_credential_exits_2(env: dict[str, str], tenant: int) -> None:
    result = credentials("delete", "--tenant", str(tenant), "--vendor", "erp", env=env)
    assert result.returncode == 2
    assert f"no credential for tenant {tenant}, vendor 'erp'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["", "not-a-fernet-key-at-all"], ids=["missing", "malformed"])
def test_a_bad_key_exits_2_naming_the_variable_and_not_the_key(
    env: dict[str, str], tenant: int, key: str
) -> None:
    result = credentials(
        "set", "--tenant", str(tenant), "--vendor", "crm", "--field", "client_id=x",
        env={**env, "PIPELINE_SECRET_KEY": key},
    )  # fmt: skip
    assert result.returncode == 2
    assert "PIPELINE_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    if key:
        assert key not in result.stderr
