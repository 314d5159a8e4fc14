"""Every run and item status is either open or finished, never both: code that asks "is it
closed?" reads `FINISHED_*_STATUSES`, so a new status must be placed here first."""

from __future__ import annotations

from pipeline.db.models import (
    FINISHED_ITEM_STATUSES,
    FINISHED_RUN_STATUSES,
    OPEN_ITEM_STATUSES,
    OPEN_RUN_STATUSES,
    ItemStatus,
    RunStatus,
)


def test_every_run_status_is_open_or_finished() -> None:
    assert set(OPEN_RUN_STATUSES).isdisjoint(FINISHED_RUN_STATUSES)
    assert set(OPEN_RUN_STATUSES) | set(FINISHED_RUN_STATUSES) == set(RunStatus)


def test_every_item_status_is_open_or_finished() -> None:
    assert set(OPEN_ITEM_STATUSES).isdisjoint(FINISHED_ITEM_STATUSES)
    assert set(OPEN_ITEM_STATUSES) | set(FINISHED_ITEM_STATUSES) == set(ItemStatus)


def test_finished_statuses_match_their_stored_strings() -> None:
    """Stored, shown by the API and compared with plain strings by the CLI and tests."""
    assert list(FINISHED_RUN_STATUSES) == ["succeeded", "degraded", "failed"]
    assert "dead" in FINISHED_ITEM_STATUSES
