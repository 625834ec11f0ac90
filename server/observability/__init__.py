"""Metrics (Prometheus), structured logs with the request ID, and the broker checks behind readiness."""
