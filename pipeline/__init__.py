"""resilient-pipeline: Celery jobs for many tenants against flaky vendors."""
