"""`pipeline credentials`: where field values come from, and a listing that shows no value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.cli.credentials import credential_lines, parse_fields
from pipeline.credentials import CredentialSummary
from pipeline.errors import InputError

SECRET = "s3cr3t-Value-42"


def no_stdin(name: str) -> str:
    raise AssertionError(f"stdin read for {name}")


def test_literal_stdin_and_env_values() -> None:
    asked: list[str] = []

    def stdin(name: str) -> str:
        asked.append(name)
        return SECRET

    fields = parse_fields(
        ["client_id=abc", "client_secret=@-", "token=@env:CRM_TOKEN", "note=@@home"],
        read_stdin=stdin,
        environ={"CRM_TOKEN": "tok"},
    )
    assert fields == {"client_id": "abc", "client_secret": SECRET, "token": "tok", "note": "@home"}
    assert asked == ["client_secret"]


def test_a_value_may_hold_an_equals_sign() -> None:
    assert parse_fields(["password=a=b"], read_stdin=no_stdin, environ={}) == {"password": "a=b"}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([SECRET], "--field number 1 is not NAME=VALUE"),
        (["a=1", f"={SECRET}"], "--field number 2 is not NAME=VALUE"),
        (["a=1", "a=2"], "--field a is given twice"),
        (["a=@env:NOPE"], "environment variable 'NOPE' is not set"),
        (["a=@env:"], "environment variable '' is not set"),
        ([f"a=@{SECRET}"], "a value starting with @ must be"),
        (["a=@-", "b=@-"], "only one field can be @-"),
    ],
    ids=["no-equals", "no-name", "twice", "unset-env", "empty-env", "unknown-at", "stdin-twice"],
)
def test_bad_fields_are_input_errors_that_never_quote_a_value(
    specs: list[str], message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_fields(specs, read_stdin=lambda name: "x", environ={})
    assert SECRET not in str(caught.value)


def summary(**changes: object) -> CredentialSummary:
    base: dict[str, object] = {
        "id": 1,
        "tenant_id": 7,
        "vendor": "crm",
        "fields": ("client_id", "client_secret"),
        "status": "active",
        "attention_reason": None,
        "attention_at": None,
        "updated_at": datetime(2026, 11, 23, tzinfo=UTC),
    }
    return CredentialSummary(**{**base, **changes})  # type: ignore[arg-type]


def test_the_listing_shows_names_status_and_attention() -> None:
    lines = credential_lines(
        [
            summary(),
            summary(
                id=2,
                vendor="erp",
                fields=("db", "login", "password", "url"),
                status="needs_attention",
                attention_reason="AUTH_REQUIRED: ERP refused the login",
                attention_at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
            ),
            summary(id=3, tenant_id=8, fields=None),
        ]
    )
    assert lines[0].split() == ["tenant", "vendor", "status", "fields", "attention"]
    assert lines[1].split() == ["7", "crm", "active", "client_id,", "client_secret"]
    assert "needs_attention" in lines[2]
    assert "2026-11-23 09:30:00 UTC AUTH_REQUIRED: ERP refused the login" in lines[2]
    assert "cannot decrypt" in lines[3]
    assert lines[0].index("status") == lines[1].index("active") == lines[2].index("needs")


def test_an_empty_listing_says_so() -> None:
    assert credential_lines([]) == ["no credentials"]
