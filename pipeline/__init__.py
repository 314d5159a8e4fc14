"""resilient-pipeline: Celery jobs for many tenants against flaky vendors.

from pipeline import enqueue_enrichment

The enqueue functions are looked up on first use (PEP 562), not imported here: importing
any `pipeline.*` module runs this file first, and a light module such as `pipeline.errors`
must not drag in Celery, SQLAlchemy and the run tables with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.enqueue import enqueue_crm_sync, enqueue_enrichment, enqueue_export

__all__ = ["enqueue_crm_sync", "enqueue_enrichment", "enqueue_export"]

_LAZY_EXPORTS = {name: "pipeline.enqueue" for name in __all__}


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once found, a plain attribute: no second lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
