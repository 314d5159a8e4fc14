from __future__ import annotations

import os

import pytest

from pipeline.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every environment variable a `Settings` field could read (any case)."""
    fields = {name.lower() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.lower() in fields:
            monkeypatch.delenv(key, raising=False)
    return monkeypatch
