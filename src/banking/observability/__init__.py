"""Metrics, structured logs and request context."""
