"""The credential store on Postgres: upsert, masking, needs-attention, rotation across a key
change, and rows that never hold a secret in plain text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from pipeline.credentials import (
    delete_credential,
    get_credential,
    list_credentials,
    mark_needs_attention,
    put_credential,
    rotate_credentials,
)
from pipeline.errors import InputError, SettingsError
from pipeline.settings import get_settings

SECRET = {"client_id": "acme-client", "client_secret": "s3cr3t-Value-42"}
ERP_SECRET = {"url": "http://erp.local", "db": "acme", "login": "bot", "password": "pw-9f8e7d"}


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setenv("PIPELINE_SECRET_KEY", ",".join(keys))
    get_settings.cache_clear()


def raw_rows(database_url: str, tenant_id: int) -> list[str]:
    """Each of the tenant's rows as Postgres renders the whole row: what a dump would show."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.scalars(
                    text("SELECT c::text FROM credentials c WHERE tenant_id = :t"), {"t": tenant_id}
                )
            )
    finally:
        engine.dispose()


@pytest.fixture
def key(integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh key, and a credentials table emptied so `rotate` meets no other test's rows."""
    engine = create_engine(integration_env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM credentials"))
    engine.dispose()
    new = Fernet.generate_key().decode()
    use_keys(monkeypatch, new)
    yield new
    monkeypatch.undo()
    get_settings.cache_clear()


def test_put_get_list_delete(key: str, tenant: int) -> None:
    first = put_credential(tenant, "crm", SECRET)
    assert put_credential(tenant, "crm", SECRET) == first  # an upsert, not a second row
    put_credential(tenant, "erp", ERP_SECRET)

    cred = get_credential(tenant, "crm")
    assert (cred.id, cred.tenant_id, cred.vendor, cred.status) == (first, tenant, "crm", "active")
    assert dict(cred.secret) == SECRET
    assert SECRET["client_secret"] not in repr(cred)

    listed = list_credentials(tenant)
    assert [(c.vendor, c.fields, c.status) for c in listed] == [
        ("crm", ("client_id", "client_secret"), "active"),
        ("erp", ("url", "db", "login", "password"), "active"),
    ]
    assert {c.tenant_id for c in list_credentials()} >= {tenant}
    for value in [*SECRET.values(), *ERP_SECRET.values()]:
        assert value not in repr(listed)

    delete_credential(tenant, "crm")
    assert [c.vendor for c in list_credentials(tenant)] == ["erp"]
    with pytest.raises(InputError, match=f"no credential for tenant {tenant}, vendor 'crm'"):
        get_credential(tenant, "crm")
    with pytest.raises(InputError, match="no credential"):
        delete_credential(tenant, "crm")


def test_a_new_put_replaces_the_secret(key: str, tenant: int) -> None:
    put_credential(tenant, "crm", SECRET)
    put_credential(tenant, "crm", {**SECRET, "client_secret": "rotated-by-vendor"})
    assert get_credential(tenant, "crm").secret["client_secret"] == "rotated-by-vendor"


def test_the_row_never_holds_the_secret_in_plain_text(
    key: str, tenant: int, integration_env: dict[str, str]
) -> None:
    put_credential(tenant, "erp", ERP_SECRET)
    (row,) = raw_rows(integration_env["DATABASE_URL"], tenant)
    for name, value in ERP_SECRET.items():
        assert value not in row
        # even the field names are inside the token (quoted, as plaintext JSON would hold
        # them: a bare two-letter name like `db` turns up in random base64 by chance)
        assert f'"{name}"' not in row and f"'{name}'" not in row
    assert key not in row


def test_needs_attention_holds_until_the_credential_is_stored_again(key: str, tenant: int) -> None:
    put_credential(tenant, "crm", SECRET)
    assert mark_needs_attention(tenant, "crm", "AUTH_REQUIRED: re-auth refused (401)") is True
    assert mark_needs_attention(tenant, "crm", "a later refusal") is False  # first one kept

    cred = get_credential(tenant, "crm")
    assert cred.needs_attention
    assert cred.attention_reason == "AUTH_REQUIRED: re-auth refused (401)"
    assert cred.attention_at is not None
    (summary,) = list_credentials(tenant)
    assert (summary.status, summary.attention_reason) == ("needs_attention", cred.attention_reason)

    put_credential(tenant, "crm", {**SECRET, "client_secret": "fixed"})
    cred = get_credential(tenant, "crm")
    assert (cred.status, cred.attention_reason, cred.attention_at) == ("active", None, None)
    assert mark_needs_attention(tenant, "crm", "again") is True


def test_marking_an_unknown_credential_is_an_input_error(key: str, tenant: int) -> None:
    with pytest.raises(InputError, match="no credential"):
        mark_needs_attention(tenant, "crm", "AUTH_REQUIRED")


def test_rotation_across_a_key_change_keeps_old_credentials_readable(
    key: str, tenant: int, monkeypatch: pytest.MonkeyPatch, integration_env: dict[str, str]
) -> None:
    old = key
    put_credential(tenant, "crm", SECRET)
    put_credential(tenant, "erp", ERP_SECRET)
    before = raw_rows(integration_env["DATABASE_URL"], tenant)

    new = Fernet.generate_key().decode()
    use_keys(monkeypatch, new, old)
    assert dict(get_credential(tenant, "crm").secret) == SECRET  # old key still decrypts

    use_keys(monkeypatch, new)  # dropping the old key too early: loud, and listed as such
    with pytest.raises(SettingsError, match="PIPELINE_SECRET_KEY") as caught:
        get_credential(tenant, "crm")
    assert new not in str(caught.value) and old not in str(caught.value)
    assert [c.fields for c in list_credentials(tenant)] == [None, None]
    with pytest.raises(SettingsError, match=f"tenant {tenant}"):
        rotate_credentials()
    assert raw_rows(integration_env["DATABASE_URL"], tenant) == before  # nothing changed

    use_keys(monkeypatch, new, old)
    assert rotate_credentials() == 2
    after = raw_rows(integration_env["DATABASE_URL"], tenant)
    assert after != before

    use_keys(monkeypatch, new)
    assert dict(get_credential(tenant, "crm").secret) == SECRET
    assert dict(get_credential(tenant, "erp").secret) == ERP_SECRET
    assert rotate_credentials() == 2  # safe to repeat


def test_a_missing_key_stops_the_store_naming_the_variable(
    key: str, tenant: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_SECRET_KEY")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="PIPELINE_SECRET_KEY is not set"):
        put_credential(tenant, "crm", SECRET)
