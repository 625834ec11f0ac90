"""Wardwatch server: database, task queue, REST API and CLI around the `model` and `ingest` libraries."""

__version__ = "0.1.0"
