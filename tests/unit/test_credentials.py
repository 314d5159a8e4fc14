"""Credentials at rest: Fernet round trip, key rotation, masking, and key errors that name
PIPELINE_SECRET_KEY without showing a key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from pipeline.credentials import Credential, CredentialCipher, CredentialSummary, SecretFields
from pipeline.errors import InputError, SettingsError
from pipeline.settings import get_settings, load_settings

SECRET = {"client_id": "acme-client", "client_secret": "s3cr3t-Value-42"}
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_a_secret_survives_the_round_trip_and_is_not_in_the_token() -> None:
    cipher = CredentialCipher(new_key())
    token = cipher.encrypt(SECRET)
    assert cipher.decrypt(token) == SECRET
    for value in SECRET.values():
        assert value not in token


def test_each_write_is_a_fresh_token() -> None:
    cipher = CredentialCipher(new_key())
    assert cipher.encrypt(SECRET) != cipher.encrypt(SECRET)


def test_old_keys_still_decrypt_and_rotation_moves_a_token_to_the_new_key() -> None:
    old, new = new_key(), new_key()
    token = CredentialCipher(old).encrypt(SECRET)

    both = CredentialCipher(f"{new}, {old}")
    assert both.decrypt(token) == SECRET
    with pytest.raises(SettingsError):
        CredentialCipher(new).decrypt(token)

    rotated = both.rotate(token)
    assert CredentialCipher(new).decrypt(rotated) == SECRET
    with pytest.raises(SettingsError):
        CredentialCipher(old).decrypt(rotated)


def test_new_writes_use_the_first_key() -> None:
    old, new = new_key(), new_key()
    token = CredentialCipher(f"{new},{old}").encrypt(SECRET)
    assert CredentialCipher(new).decrypt(token) == SECRET
    with pytest.raises(SettingsError):
        CredentialCipher(old).decrypt(token)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (None, "PIPELINE_SECRET_KEY is not set"),
        ("  ", "PIPELINE_SECRET_KEY is not set"),
        ("not-a-fernet-key-but-long-enough-to-look-like-one", "key 1 of 1 is not a Fernet key"),
        (f"{Fernet.generate_key().decode()},short", "key 2 of 2 is not a Fernet key"),
        (f"{Fernet.generate_key().decode()},,", "key 2 of 3 is empty"),
    ],
    ids=["missing", "blank", "malformed", "second-malformed", "empty-entry"],
)
def test_a_bad_key_names_the_variable_and_never_shows_a_key(keys: str | None, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        CredentialCipher(keys)
    text = str(caught.value)
    assert "PIPELINE_SECRET_KEY" in text
    assert message in text
    for part in (keys or "").split(","):
        if part.strip():
            assert part.strip() not in text


def test_a_token_no_key_opens_names_what_and_the_variable() -> None:
    token = CredentialCipher(new_key()).encrypt(SECRET)
    with pytest.raises(SettingsError, match="PIPELINE_SECRET_KEY") as caught:
        CredentialCipher(new_key()).decrypt(token, what="the credential for tenant 7")
    assert "tenant 7" in str(caught.value)


def test_the_key_comes_from_settings_and_is_never_echoed(clean_env: pytest.MonkeyPatch) -> None:
    key = new_key()
    clean_env.setenv("PIPELINE_SECRET_KEY", key)
    settings = load_settings()
    assert settings.pipeline_secret_key is not None
    assert key not in repr(settings) and key not in str(settings.model_dump())
    get_settings.cache_clear()
    try:
        cipher = CredentialCipher.from_settings()
        assert CredentialCipher(key).decrypt(cipher.encrypt(SECRET)) == SECRET
    finally:
        get_settings.cache_clear()


def test_a_missing_key_from_settings_is_a_settings_error(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="PIPELINE_SECRET_KEY is not set"):
            CredentialCipher.from_settings()
    finally:
        get_settings.cache_clear()


def credential() -> Credential:
    return Credential(
        id=1,
        tenant_id=7,
        vendor="crm",
        secret=SecretFields(SECRET),
        status="active",
        attention_reason=None,
        attention_at=None,
        updated_at=NOW,
    )


def test_a_credential_repr_and_str_mask_every_value() -> None:
    shown = [repr(credential()), str(credential()), f"{credential()}", repr([credential()])]
    shown += [repr(credential().secret), str(credential().secret), f"{dict(a=credential().secret)}"]
    for text in shown:
        assert "client_id" in text and "client_secret" in text and "***" in text
        for value in SECRET.values():
            assert value not in text


def test_a_credential_is_read_only() -> None:
    cred = credential()
    assert cred.secret["client_secret"] == SECRET["client_secret"]
    with pytest.raises(TypeError):
        cred.secret["client_secret"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        cred.vendor = "erp"  # type: ignore[misc]


def test_a_summary_holds_field_names_and_no_values() -> None:
    summary = CredentialSummary(
        id=1,
        tenant_id=7,
        vendor="crm",
        fields=tuple(SECRET),
        status="active",
        attention_reason=None,
        attention_at=None,
        updated_at=NOW,
    )
    for value in SECRET.values():
        assert value not in repr(summary)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ({}, "at least one field"),
        ({"client_secret": ""}, "'client_secret' is empty"),
        ({"bad name": "x"}, "is not a name"),
        ({"port": 8069}, "'port' must be a string"),
    ],
    ids=["empty", "empty-value", "bad-name", "not-a-string"],
)
def test_a_malformed_secret_is_refused_before_any_io(secret: dict, message: str) -> None:
    from pipeline.credentials import put_credential

    with pytest.raises(InputError, match=message):
        put_credential(7, "crm", secret)


@pytest.mark.parametrize(
    ("tenant", "vendor", "message"),
    [
        (0, "crm", "tenant must be a positive integer"),
        (7, "CRM!", "vendor must be a lower-case name"),
        (7, "", "vendor must be a lower-case name"),
    ],
)
def test_a_malformed_owner_is_an_input_error(tenant: int, vendor: str, message: str) -> None:
    from pipeline.credentials import get_credential

    with pytest.raises(InputError, match=message):
        get_credential(tenant, vendor)
