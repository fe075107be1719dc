"""The audit trail (issue 16, docs/audit.md): every event the service publishes, recorded
once in an append-only store, read by staff through ``GET /api/v1/audit``, and compared with
the outbox by ``banking audit gaps``."""
