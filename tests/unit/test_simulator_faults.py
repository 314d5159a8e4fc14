"""Fault decisions of the vendor simulator, without HTTP: which fault applies, when it
strikes, and that the seeded draws make it reproducible."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.simulator import Fault, Outage
from pipeline.simulator.faults import FaultBook


def strikes(book: FaultBook, vendor: str, tenant: int, calls: int, now: float = 0.0) -> list[bool]:
    return [book.verdict(vendor, tenant, now).strikes for _ in range(calls)]


def test_a_fault_naming_a_failure_strikes_every_call_unless_given_a_rate() -> None:
    assert Fault(vendor="crm", status=429).strike_rate == 1.0
    assert Fault(vendor="crm", hang_s=2).strike_rate == 1.0
    assert Fault(vendor="crm", drop=True).strike_rate == 1.0
    assert Fault(vendor="crm", drop=True, error_rate=0.25).strike_rate == 0.25
    assert Fault(vendor="crawler", thin=True).strike_rate == 0.0
    assert Fault(vendor="crm").failure_status == 503


def test_fault_fields_are_validated() -> None:
    with pytest.raises(ValidationError):
        Fault(vendor="crm", error_rate=1.5)
    with pytest.raises(ValidationError):
        Fault.model_validate({"vendor": "crm", "eror_rate": 0.5})


def test_the_same_seed_gives_the_same_strikes_per_vendor_and_tenant() -> None:
    def sequence(seed: int) -> list[bool]:
        book = FaultBook(seed)
        book.set(Fault(vendor="search", error_rate=0.5))
        return strikes(book, "search", 1, 40)

    assert sequence(9) == sequence(9)
    assert sequence(9) != sequence(10)
    assert 5 < sum(sequence(9)) < 35


def test_every_call_draws_once_even_without_a_fault() -> None:
    """So a fault set mid-run meets the same draws whatever happened on other streams."""
    quiet, busy = FaultBook(1), FaultBook(1)
    strikes(busy, "search", 2, 10)  # another tenant's calls do not move tenant 1's stream
    strikes(quiet, "search", 1, 3)
    strikes(busy, "search", 1, 3)
    for book in (quiet, busy):
        book.set(Fault(vendor="search", error_rate=0.5))

    assert strikes(quiet, "search", 1, 20) == strikes(busy, "search", 1, 20)


def test_the_most_specific_active_fault_wins() -> None:
    book = FaultBook(0)
    everyone = Fault(vendor="crm", status=500)
    tenant_outage = Fault(vendor="crm", tenant=1, outage=Outage(start=100, end=200), status=401)
    book.set(everyone)
    book.set(tenant_outage)

    assert book.verdict("crm", 1, now=150).fault == tenant_outage
    assert book.verdict("crm", 1, now=250).fault == everyone  # the outage is over
    assert book.verdict("crm", 2, now=150).fault == everyone
    assert book.verdict("erp", 1, now=150).fault is None


def test_reset_restarts_the_draws_but_clear_does_not() -> None:
    book = FaultBook(4)
    book.set(Fault(vendor="lusha", error_rate=0.5))
    first = strikes(book, "lusha", 1, 10)

    book.reset()
    book.set(Fault(vendor="lusha", error_rate=0.5))
    assert strikes(book, "lusha", 1, 10) == first

    book.clear()
    book.set(Fault(vendor="lusha", error_rate=0.5))
    assert strikes(book, "lusha", 1, 10) != first


def test_a_fault_with_skip_lets_that_many_calls_through_then_strikes() -> None:
    from pipeline.simulator.faults import Fault, FaultBook

    book = FaultBook(seed=1)
    book.set(Fault(vendor="crm", tenant=3, status=503, skip=2))
    assert [book.verdict("crm", 3, 0.0).strikes for _ in range(4)] == [False, False, True, True]
    assert book.verdict("crm", 4, 0.0).strikes is False, "another tenant is untouched"


def test_a_fault_with_times_retires_after_that_many_strikes() -> None:
    from pipeline.simulator.faults import Fault, FaultBook

    book = FaultBook(seed=1)
    book.set(Fault(vendor="crm", tenant=3, status=503, times=2))
    assert [book.verdict("crm", 3, 0.0).strikes for _ in range(4)] == [True, True, False, False]


def test_a_rate_limit_answers_429_to_calls_beyond_the_rate_in_the_last_second() -> None:
    book = FaultBook(0)
    book.set(Fault(vendor="crawler", tenant=1, rate_limit_per_s=3, retry_after=1))
    assert Fault(vendor="crawler", rate_limit_per_s=3).failure_status == 429
    assert strikes(book, "crawler", 1, 5, now=10.0) == [False, False, False, True, True]
    assert strikes(book, "crawler", 2, 2, now=10.0) == [False, False], "another tenant"
    assert strikes(book, "crawler", 1, 1, now=10.5) == [True]
    assert strikes(book, "crawler", 1, 4, now=11.0) == [False, False, False, True]


def test_a_rate_limit_counts_only_the_calls_it_let_through() -> None:
    """A client hammering at 429s is not locked out forever: refused calls do not count."""
    book = FaultBook(0)
    book.set(Fault(vendor="crawler", tenant=1, rate_limit_per_s=2))
    calls = [book.verdict("crawler", 1, 100.0 + n * 0.1).strikes for n in range(30)]
    assert calls.count(False) == 6, "two per second over three seconds"
