"""Companies as a caller gives them: what Postgres could not store is refused with a reason
naming the field, never the value; blank is not given; a repeat names both positions."""

from __future__ import annotations

import pytest

from pipeline.companies import CompanyRef, check_storable
from pipeline.enqueue import CompanyInput, parse_companies
from pipeline.errors import InputError

HOSTILE = "<img src=x onerror=alert(1)>"


def refusal(companies: list[object]) -> InputError:
    with pytest.raises(InputError) as raised:
        parse_companies(companies)  # type: ignore[arg-type]
    return raised.value


@pytest.mark.parametrize(
    ("company", "field", "reason"),
    [
        ({"name": "Acme\x00Corp"}, "companies.0.name", "NUL character"),
        ({"domain": "acme\x00.com"}, "companies.0.domain", "NUL character"),
        ({"name": "Acme \ud800"}, "companies.0.name", ""),
        ({"domain": HOSTILE}, "companies.0.domain", "not a domain"),
        ({"name": "x" * 10_000}, "companies.0.name", "at most 255 characters"),
    ],
    ids=["nul-name", "nul-domain", "lone-surrogate", "markup-domain", "long-name"],
)
def test_what_postgres_cannot_store_is_refused_naming_the_field(
    company: dict[str, str], field: str, reason: str
) -> None:
    error = refusal([company])
    assert [e["field"] for e in error.details["errors"]] == [field]
    assert reason in error.message
    for value in company.values():
        assert value not in error.message and value not in str(error.details)


def test_blank_name_and_domain_are_not_given_so_the_item_is_data_empty() -> None:
    assert parse_companies([{"name": "  ", "domain": " \t"}]) == [CompanyInput()]


def test_a_domain_is_its_bare_host() -> None:
    assert CompanyInput(domain="https://www.Acme.com:443/about?x=1").domain == "acme.com"
    assert CompanyInput(domain="bücher.de").domain == "bücher.de"


def test_a_repeat_and_an_id_out_of_range_name_their_positions() -> None:
    error = refusal([{"domain": "acme.com"}, {"domain": "ACME.com"}])
    assert error.details["errors"][0]["field"] == "companies.1"
    assert "acme.com" not in error.message.lower()
    error = refusal([2**63])
    assert error.details["errors"][0]["field"] == "companies.0"


def test_the_store_refuses_a_nul_however_the_company_came_in() -> None:
    with pytest.raises(InputError) as raised:
        check_storable([CompanyRef(None, "fine", None), CompanyRef(None, None, "a\x00.com")])
    assert [e["field"] for e in raised.value.details["errors"]] == ["companies.1.domain"]
    check_storable([CompanyRef(None, "Acme", "acme.com")])
