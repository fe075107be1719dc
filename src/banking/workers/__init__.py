"""The Kafka-side doors: transaction processor, dead-letter handler, balance-cache invalidator,
and the runtime that runs them as `banking worker NAME` or in-process when embedded."""
