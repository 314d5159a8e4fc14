"""Job kinds, one module each: the Celery tasks that make up each job."""
