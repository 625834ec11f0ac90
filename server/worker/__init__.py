"""Task queue: the Celery app and tasks (production) and the in-process dispatcher (embedded mode)."""
