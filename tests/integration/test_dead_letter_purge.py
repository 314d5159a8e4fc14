"""`pipeline dlq purge --older-than AGE` at its boundary, on the wall clock it reads.

The command has no `now` to pass: the entry's last failure is stamped with the wall clock
when it is recorded and the cut-off is read from it when the command runs. freezegun moves
this process's clock (both happen in this process; no worker is involved) to the exact
moment an entry turns old enough. The clock is set in the 1990s, so the cut-offs touch no
other test's entries in the shared session database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from pipeline import dead_letters
from pipeline.cli import main
from pipeline.errors import NotFoundError

pytestmark = pytest.mark.usefixtures("integration_env")


def record_at(moment: datetime) -> int:
    with freeze_time(moment):
        entry_id = dead_letters.record(
            task_id=f"purge-{uuid.uuid4().hex}",
            task_name="tasks.enrichment.record_item",
            args=[],
            kwargs={},
            path="failure",
            error_code="STEP_ERROR",
            message="as if it had died",
        )
    assert entry_id is not None
    return entry_id


def purge_at(moment: datetime, capsys: pytest.CaptureFixture[str], age: str) -> str:
    capsys.readouterr()  # what came before (a dead letter's log line) is not the command's
    with freeze_time(moment):
        assert main(["dlq", "purge", "--older-than", age]) == 0
    return capsys.readouterr().out.strip()


def exists(entry_id: int) -> bool:
    try:
        dead_letters.get_entry(entry_id)
    except NotFoundError:
        return False
    return True


# Each case records at its own moment, a year before the last case's, so no case's cut-off
# reaches another's entry.
@pytest.mark.parametrize(
    ("age", "span", "failed_at"),
    [
        ("30d", timedelta(days=30), datetime(2000, 1, 1, 12, 0, tzinfo=UTC)),
        ("12h", timedelta(hours=12), datetime(1999, 1, 1, 12, 0, tzinfo=UTC)),
        ("15m", timedelta(minutes=15), datetime(1998, 1, 1, 12, 0, tzinfo=UTC)),
        ("90s", timedelta(seconds=90), datetime(1997, 1, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_an_entry_exactly_as_old_as_the_age_is_kept_and_a_microsecond_older_is_purged(
    age: str, span: timedelta, failed_at: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    entry_id = record_at(failed_at)
    assert dead_letters.get_entry(entry_id).last_failed_at == failed_at

    assert purge_at(failed_at + span, capsys, age) == "purged 0 dead letters"
    assert exists(entry_id), f"exactly {age} old is not older than {age}"

    older = failed_at + span + timedelta(microseconds=1)
    assert purge_at(older, capsys, age) == "purged 1 dead letters"
    assert not exists(entry_id)
