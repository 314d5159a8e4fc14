"""`--then`: a list of stage names; an empty name is a typo to point out, not "none"."""

from __future__ import annotations

import pytest

from pipeline.cli.common import stages_option
from pipeline.errors import InputError


@pytest.mark.parametrize(
    ("given", "stages"),
    [
        ("", []),
        ("  ", []),
        ("crm_sync", ["crm_sync"]),
        (" crm_sync , export ", ["crm_sync", "export"]),
    ],
)
def test_stage_lists_are_read(given: str, stages: list[str]) -> None:
    assert stages_option(given) == stages


@pytest.mark.parametrize("given", [",", "crm_sync,,export", "crm_sync,", ", export"])
def test_an_empty_stage_name_is_refused(given: str) -> None:
    with pytest.raises(InputError, match="--then"):
        stages_option(given)
