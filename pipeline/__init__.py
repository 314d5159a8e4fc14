"""resilient-pipeline: Celery jobs for many tenants against flaky vendors.

from pipeline import enqueue_enrichment
"""

from pipeline.enqueue import enqueue_crm_sync, enqueue_enrichment, enqueue_export

__all__ = ["enqueue_crm_sync", "enqueue_enrichment", "enqueue_export"]
