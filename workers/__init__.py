"""The Celery side: the app, its queues and routing, the task base class, signal hooks."""
