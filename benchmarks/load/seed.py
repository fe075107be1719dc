"""Seed a database for a load test: migrate it, create a teller and a customer, open funded
accounts, and print the account ids and a customer token as JSON.

    DATABASE_URL=postgresql://banking:banking@127.0.0.1:55432/banking \\
    JWT_SECRET=... JWT_EXPIRE_MINUTES=1440 \\
    .venv/bin/python -m benchmarks.load.seed --accounts 20 --funding 1000000.00

Run it with the same JWT_SECRET as the server, so the server accepts the token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from decimal import Decimal
from uuid import uuid4

from banking.bootstrap import build_container
from banking.config import load_settings
from banking.domain.roles import Role
from banking.storage.migrate import upgrade
from benchmarks.seeding import create_user, open_funded_account, token

ACCOUNTS_MAX = 1000


async def seed(accounts_count: int, funding: Decimal, currency: str) -> dict[str, object]:
    """The teller, the customer and the customer's funded accounts; their ids and tokens."""
    container = build_container(load_settings())
    try:
        suffix = uuid4().hex[:8]
        teller = await create_user(container, f"load-teller-{suffix}", Role.TELLER)
        customer = await create_user(container, f"load-customer-{suffix}", Role.CUSTOMER)
        account_ids = [
            str(await open_funded_account(container, teller, customer.user_id, funding, currency))
            for _ in range(accounts_count)
        ]
        return {
            "account_ids": account_ids,
            "customer_token": token(container, customer),
            "teller_token": token(container, teller),
            "currency": currency,
        }
    finally:
        await container.close()


def main(arguments: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.load.seed [--accounts N] [--funding AMOUNT] [--currency C]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--funding", default="1000000.00")
    parser.add_argument("--currency", default="USD")
    options = parser.parse_args(arguments)
    if not 1 <= options.accounts <= ACCOUNTS_MAX:
        parser.error(f"--accounts must be between 1 and {ACCOUNTS_MAX}")
    upgrade(load_settings().effective_database_url)  # alembic runs its own event loop
    result = asyncio.run(seed(options.accounts, Decimal(options.funding), options.currency))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
