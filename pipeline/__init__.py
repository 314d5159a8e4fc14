"""resilient-pipeline: Celery jobs for many tenants against flaky vendors.

from pipeline import enqueue_enrichment
"""

from pipeline.enqueue import enqueue_enrichment, enqueue_export

__all__ = ["enqueue_enrichment", "enqueue_export"]
