"""Pure domain rules: money, currencies, roles and the errors a caller can get. No I/O here."""
