"""Banking API: a core-banking transaction service.

Accounts, balances, debits, credits and transfers with strong consistency.
"""

__version__ = "0.1.0"
