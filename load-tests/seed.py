"""Seed a database for a load test: migrate it, create a teller and a customer, open funded
accounts, and print the account ids and a customer token as JSON.

    DATABASE_URL=postgresql://banking:banking@127.0.0.1:55432/banking \
    JWT_SECRET=... JWT_EXPIRE_MINUTES=1440 \
    .venv/bin/python load-tests/seed.py --accounts 20 --funding 1000000.00

Run it with the same JWT_SECRET as the server, so the server accepts the token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from decimal import Decimal
from uuid import uuid4

from banking.config import load_settings
from banking.container import build_container
from banking.domain.roles import Actor, Role
from banking.domain.records import DebitOrCredit
from banking.storage.migrate import upgrade

ACCOUNTS_MAX = 1000


async def seed(accounts_count: int, funding: Decimal, currency: str) -> dict[str, object]:
    settings = load_settings()
    container = build_container(settings)
    try:
        suffix = uuid4().hex[:8]
        password = secrets.token_urlsafe(18)
        teller = await container.users.create(
            None,
            username=f"load-teller-{suffix}",
            email=f"load-teller-{suffix}@example.com",
            password=password,
            role=Role.TELLER,
        )
        customer = await container.users.create(
            None,
            username=f"load-customer-{suffix}",
            email=f"load-customer-{suffix}@example.com",
            password=password,
            role=Role.CUSTOMER,
        )
        teller_actor = Actor(teller.user_id, teller.username, Role.TELLER)
        account_ids = []
        for _ in range(accounts_count):
            account, _ = await container.accounts.open(
                teller_actor,
                account_type="checking",
                currency=currency,
                customer_id=customer.user_id,
            )
            await container.movements.credit(
                teller_actor, DebitOrCredit(account.account_id, funding, currency)
            )
            account_ids.append(str(account.account_id))
        return {
            "account_ids": account_ids,
            "customer_token": container.tokens.issue(
                customer.user_id, customer.username, Role.CUSTOMER
            ),
            "teller_token": container.tokens.issue(teller.user_id, teller.username, Role.TELLER),
            "currency": currency,
        }
    finally:
        await container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--funding", default="1000000.00")
    parser.add_argument("--currency", default="USD")
    arguments = parser.parse_args()
    if not 1 <= arguments.accounts <= ACCOUNTS_MAX:
        parser.error(f"--accounts must be between 1 and {ACCOUNTS_MAX}")
    upgrade(load_settings().effective_database_url)  # alembic runs its own event loop
    result = asyncio.run(seed(arguments.accounts, Decimal(arguments.funding), arguments.currency))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
