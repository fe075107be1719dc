"""The ledger core: use cases on accounts and money. No HTTP, gRPC or Kafka in here."""
