"""Helpers of the transport-security tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from banking.domain.roles import Role
from tests.conftest import Bank


def kafka_settings(kafka_secure: dict[str, str], user: str, prefix: str) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": kafka_secure["BANKING_KAFKA_SECURE_BOOTSTRAP"],
        "kafka_topic_prefix": prefix,
        "kafka_topic_partitions": 1,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": user,
        "kafka_sasl_password": kafka_secure[f"BANKING_KAFKA_SECURE_{user.upper()}_PASSWORD"],
        "kafka_ssl_cafile": kafka_secure["BANKING_KAFKA_SECURE_CA"],
    }


async def credit_and_debit(bank: Bank) -> str:
    """A teller funds a new account with 250.00, its customer debits 40.10; the account id."""
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="250.00")
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "40.10", "currency": "USD"},
        headers=customer,
    )
    assert debit.status_code == 200, debit.text
    assert await bank.balance(account_id, customer) == Decimal("209.90")
    return account_id
