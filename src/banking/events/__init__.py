"""Events: topics, the outbox rows written with every money movement, and their payloads."""
