"""Banking API: a core-banking transaction service (accounts, balances, debits, credits, transfers)."""

__version__ = "0.1.0"
