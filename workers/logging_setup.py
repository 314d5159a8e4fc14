"""Celery must not configure logging itself: our JSON setup replaces it in every process."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from pipeline.logs import configure_logging
from pipeline.settings import get_settings


@setup_logging.connect
def _configure(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
