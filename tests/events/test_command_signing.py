"""Signed commands (events.signing): only a command signed by a known key moves money.

Unit tests of the signature and of the settings, then the embedded shape (in-process bus) and
the real Kafka broker with the workers as they are wired in production (workers.runtime)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from banking.config import DEVELOPMENT_COMMAND_SIGNING_KEY, InsecureConfiguration, Settings
from banking.domain.roles import Role
from banking.events import topics
from banking.events.signing import (
    CommandKeyring,
    UnauthenticatedCommand,
    development_keyring,
    keyring_of,
    signing_input,
)
from banking.events.transport import InProcessBus, Message
from banking.storage.tables import outbox, transactions
from banking.workers.admin import create_topics
from banking.workers.dead_letters import DeadLetters, as_original
from banking.workers.runtime import EmbeddedEvents, run_kafka_worker
from tests.conftest import Bank, make_settings, running_bank
from tests.events.kafka_support import consume, kafka_bootstrap, produce_raw

SETTLE_TIMEOUT_SECONDS = 60
BANK_KEY = secrets.token_hex(32)
CRM_KEY = secrets.token_hex(32)
KEYRING = CommandKeyring("bank", {"bank": BANK_KEY, "crm": CRM_KEY})
ACCOUNT = str(uuid.uuid4())


def _another_services_signature(
    secret: str, event_id: str, event_type: str, key: str, value: bytes
) -> str:
    """The signature as the README tells another service to compute it (not this package's
    code): a prefix, then each field as an 8-byte big-endian length and its bytes."""
    data = b"banking.command.v1\n"
    for part in (event_id.encode(), event_type.encode(), key.encode(), value):
        data += len(part).to_bytes(8, "big") + part
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def command_value(account_id: str, actor: dict[str, str], amount: str, command: str) -> bytes:
    return json.dumps(
        {
            "transaction_id": str(uuid.uuid4()),
            "command": command,
            "account_id": account_id,
            "destination_account_id": None,
            "amount": amount,
            "currency": "USD",
            "description": "from the CRM",
            "reference_id": f"crm-{uuid.uuid4().hex[:12]}",
            "requested_by": actor,
            "timestamp": "2026-12-01T12:00:00+00:00",
        }
    ).encode()


def crm_headers(
    key: str, value: bytes, *, kid: str = "crm", secret: str = CRM_KEY, event_id: str = ""
) -> dict[str, str]:
    """A command as another service (kid ``crm``) publishes it: CloudEvents headers, signed."""
    event_id = event_id or str(uuid.uuid4())
    return {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_type": "transaction.submitted",
        "ce_source": "/crm",
        "content-type": "application/json",
        "ce_signaturekid": kid,
        "ce_signature": _another_services_signature(
            secret, event_id, "transaction.submitted", key, value
        ),
    }


def signed_message(value: bytes = b'{"amount": "10.00"}') -> Message:
    return Message(topics.TRANSACTIONS_SUBMITTED, ACCOUNT, value, crm_headers(ACCOUNT, value))


# --- the signature ----------------------------------------------------------------------


def test_the_signature_covers_exactly_the_documented_bytes() -> None:
    data = signing_input("id-1", "transaction.submitted", "acc", b"{}")
    assert data == (
        b"banking.command.v1\n"
        + b"\x00" * 7
        + b"\x04id-1"
        + b"\x00" * 7
        + b"\x15transaction.submitted"
        + b"\x00" * 7
        + b"\x03acc"
        + b"\x00" * 7
        + b"\x02{}"
    )
    headers = KEYRING.signature_headers("id-1", "transaction.submitted", "acc", b"{}")
    assert headers == {
        "ce_signaturekid": "bank",
        "ce_signature": _another_services_signature(
            BANK_KEY, "id-1", "transaction.submitted", "acc", b"{}"
        ),
    }


def test_a_command_signed_by_another_service_verifies() -> None:
    KEYRING.verify(signed_message())  # no exception: authenticated


async def test_headers_the_dead_letter_topics_add_do_not_break_the_signature() -> None:
    bus = InProcessBus()
    retried: list[Message] = []

    async def keep(message: Message) -> None:
        retried.append(message)

    bus.subscribe(topics.TRANSACTIONS_DLQ, keep)
    dead_letters = DeadLetters(bus)
    await dead_letters.retry_later(signed_message(), RuntimeError("database gone"), attempts=1)
    await dead_letters.retry_later(retried[0], RuntimeError("still gone"), attempts=2)
    assert retried[1].headers["attempts"] == "2"
    assert retried[1].headers["error"] == "still gone"
    KEYRING.verify(retried[1])  # the retried command is still authenticated
    KEYRING.verify(as_original(retried[1]))  # and so is what `banking dlq replay` re-submits


def _tampered(change: str) -> Message:
    message = signed_message()
    if change == "value":
        return Message(message.topic, message.key, b'{"amount": "99.00"}', message.headers)
    if change == "key":
        return Message(message.topic, str(uuid.uuid4()), message.value, message.headers)
    if change == "event id":
        return Message(
            message.topic, message.key, message.value, message.headers | {"ce_id": "other"}
        )
    if change == "event type":
        headers = message.headers | {"ce_type": "transaction.completed"}
        return Message(message.topic, message.key, message.value, headers)
    if change == "copied signature":
        other = signed_message(b'{"amount": "99.00"}')
        headers = other.headers | {
            name: message.headers[name] for name in ("ce_signature", "ce_signaturekid")
        }
        return Message(other.topic, other.key, other.value, headers)
    if change == "wrong key":
        value = message.value
        headers = crm_headers(ACCOUNT, value, secret=secrets.token_hex(32))
        return Message(message.topic, message.key, value, headers)
    raise AssertionError(change)


@pytest.mark.parametrize(
    "change", ["value", "key", "event id", "event type", "copied signature", "wrong key"]
)
def test_a_changed_command_is_a_bad_signature(change: str) -> None:
    with pytest.raises(UnauthenticatedCommand) as refused:
        KEYRING.verify(_tampered(change))
    assert refused.value.reason == "bad_signature"
    assert str(refused.value) == "unauthenticated command: bad signature"


@pytest.mark.parametrize(
    ("headers", "reason", "text"),
    [
        ({}, "missing", "unauthenticated command: missing signature"),
        ({"ce_signature": ""}, "missing", "unauthenticated command: missing signature"),
        (
            {"ce_signaturekid": "mallory"},
            "unknown_key",
            "unauthenticated command: unknown signing key",
        ),
    ],
)
def test_an_unsigned_or_unknown_key_command_is_refused(
    headers: dict[str, str], reason: str, text: str
) -> None:
    message = signed_message()
    if not headers:
        message.headers.pop("ce_signature")
        message.headers.pop("ce_signaturekid")
    message.headers.update(headers)
    with pytest.raises(UnauthenticatedCommand) as refused:
        KEYRING.verify(message)
    assert (refused.value.reason, str(refused.value)) == (reason, text)


def test_without_an_event_id_nothing_binds_the_signature() -> None:
    message = signed_message()
    del message.headers["ce_id"]
    with pytest.raises(UnauthenticatedCommand, match="missing signature"):
        KEYRING.verify(message)


# --- the settings -----------------------------------------------------------------------


def test_development_uses_the_fixed_development_key_when_unset() -> None:
    keyring = keyring_of(Settings())
    assert keyring == development_keyring()
    assert keyring.secrets == {"development": DEVELOPMENT_COMMAND_SIGNING_KEY}


def test_the_keyring_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMAND_SIGNING_KEYS", f"bank:{BANK_KEY}, crm:{CRM_KEY}")
    monkeypatch.setenv("COMMAND_SIGNING_KID", "bank")
    keyring = keyring_of(Settings())
    assert keyring == KEYRING
    assert BANK_KEY not in repr(keyring) and CRM_KEY not in repr(Settings())


PRODUCTION = {
    "banking_env": "production",
    "database_url": "postgresql://bank@db/bank",
    "jwt_secret": secrets.token_hex(32),
}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "COMMAND_SIGNING_KEYS and COMMAND_SIGNING_KID must be set in production"),
        (
            {"command_signing_keys": f"bank:{BANK_KEY}"},
            "COMMAND_SIGNING_KEYS and COMMAND_SIGNING_KID must be set in production",
        ),
        (
            {"command_signing_keys": "bank:short-secret", "command_signing_kid": "bank"},
            "the COMMAND_SIGNING_KEYS key 'bank' must be a random value of at least 32",
        ),
        (
            {
                "command_signing_keys": f"bank:{BANK_KEY},dev:{DEVELOPMENT_COMMAND_SIGNING_KEY}",
                "command_signing_kid": "bank",
            },
            "the COMMAND_SIGNING_KEYS key 'dev' must be a random value",
        ),
        (
            {"command_signing_keys": f"bank:{BANK_KEY}", "command_signing_kid": "crm"},
            "COMMAND_SIGNING_KID names none of the configured keys (bank)",
        ),
        (
            {"command_signing_keys": f"{BANK_KEY}", "command_signing_kid": "bank"},
            "COMMAND_SIGNING_KEYS entry 1 is not kid:secret",
        ),
        (
            {"command_signing_keys": f"bank:{BANK_KEY},bank:{CRM_KEY}"},
            "COMMAND_SIGNING_KEYS names the key id 'bank' twice",
        ),
    ],
)
def test_production_refuses_missing_short_or_default_command_keys(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises((InsecureConfiguration, ValidationError)) as refused:
        Settings(**PRODUCTION, **settings)
    assert message in str(refused.value)
    assert BANK_KEY not in str(refused.value) and CRM_KEY not in str(refused.value)


def test_production_starts_with_real_command_keys() -> None:
    settings = Settings(
        **PRODUCTION,
        command_signing_keys=f"bank:{BANK_KEY},crm:{CRM_KEY}",
        command_signing_kid="bank",
    )
    assert keyring_of(settings) == KEYRING


def test_several_keys_need_the_signing_kid() -> None:
    with pytest.raises((InsecureConfiguration, ValidationError), match="COMMAND_SIGNING_KID must"):
        Settings(command_signing_keys=f"bank:{BANK_KEY},crm:{CRM_KEY}")


# --- what a refused command does ----------------------------------------------------------


def refused(bank: Bank, reason: str) -> float:
    value = bank.container.metrics.registry.get_sample_value(
        "banking_commands_refused_total", {"reason": reason}
    )
    assert value is not None
    return value


async def counts(bank: Bank) -> tuple[int, int]:
    async with bank.container.database.read() as connection:
        legs = (await connection.execute(select(func.count()).select_from(transactions))).scalar()
        events = (await connection.execute(select(func.count()).select_from(outbox))).scalar()
    return int(legs or 0), int(events or 0)


KEYS = {"command_signing_keys": f"bank:{BANK_KEY},crm:{CRM_KEY}", "command_signing_kid": "bank"}


async def test_embedded_a_forged_command_moves_nothing_and_a_signed_one_applies(
    database_url: str,
) -> None:
    """The in-process bus signs and verifies as Kafka does (the same code path)."""
    async with running_bank(make_settings(database_url, **KEYS)) as bank:
        teller_name = f"teller-{uuid.uuid4().hex[:8]}"
        teller_id, staff = await bank.user(Role.TELLER, name=teller_name)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="50.00")
        actor = {"user_id": str(teller_id), "username": teller_name, "role": "teller"}
        events = EmbeddedEvents(bank.container)
        await events.start()
        try:
            # What the set-up wrote is handled first (its consumers may write events too).
            await events.relay.drain()
            before = await counts(bank)
            value = command_value(account_id, actor, "1000.00", "credit")
            forged = crm_headers(account_id, value, secret=secrets.token_hex(32))
            await events.bus.publish(
                [Message(topics.TRANSACTIONS_SUBMITTED, account_id, value, forged)]
            )
            assert refused(bank, "bad_signature") == 1
            assert await bank.balance(account_id, staff) == Decimal("50.00")
            assert await counts(bank) == before

            accepted = await bank.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "20.00", "currency": "USD"},
                headers={**customer, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
            await settle(bank, accepted.headers["Location"], customer, "completed")
            assert await bank.balance(account_id, staff) == Decimal("30.00")
            assert refused(bank, "bad_signature") == 1  # the service's own command verified
        finally:
            await events.stop()


async def settle(bank: Bank, location: str, headers: dict[str, str], status: str) -> None:
    deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_SECONDS
    while (await bank.client.get(location, headers=headers)).json()["status"] != status:
        assert asyncio.get_running_loop().time() < deadline, f"{location} never {status}"
        await asyncio.sleep(0.1)


# --- the real Kafka -------------------------------------------------------------------------


@asynccontextmanager
async def kafka_bank(postgres_url: str) -> AsyncIterator[tuple[Bank, str]]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = make_settings(
        postgres_url,
        kafka_bootstrap_servers=kafka_bootstrap(),
        kafka_topic_prefix=prefix,
        kafka_topic_partitions=3,
        dlq_backoff_seconds=0.2,
        **KEYS,
    )
    await create_topics(settings)
    async with running_bank(settings) as bank:
        yield bank, prefix


@asynccontextmanager
async def workers(bank: Bank, *names: str) -> AsyncIterator[None]:
    """The workers as `banking worker NAME` runs them (workers.runtime), in this process."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_kafka_worker(n, bank.container, stop)) for n in names]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def referencing(bank: Bank, transaction_ids: list[str]) -> list[Any]:
    """Legs and events that name any of these transaction ids."""
    found: list[Any] = []
    async with bank.container.database.read() as connection:
        for transaction_id in transaction_ids:
            legs = await connection.execute(
                select(transactions.c.transaction_id).where(
                    transactions.c.transaction_id == uuid.UUID(transaction_id)
                )
            )
            rows = await connection.execute(
                select(outbox.c.event_type).where(outbox.c.payload.contains(transaction_id))
            )
            found += [*legs.all(), *rows.all()]
    return found


@pytest.mark.postgres
async def test_only_commands_signed_by_a_known_key_move_money_on_kafka(postgres_url: str) -> None:
    async with kafka_bank(postgres_url) as (bank, prefix):
        teller_name = f"teller-{uuid.uuid4().hex[:8]}"
        teller_id, staff = await bank.user(Role.TELLER, name=teller_name)
        customer_id, _ = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="50.00")
        actor = {"user_id": str(teller_id), "username": teller_name, "role": "teller"}
        submitted = prefix + topics.TRANSACTIONS_SUBMITTED

        def credit(amount: str) -> bytes:
            return command_value(account_id, actor, amount, "credit")

        genuine = credit("5.00")
        genuine_headers = crm_headers(account_id, genuine)
        tampered = credit("1000.00")
        no_signature = credit("1000.00")
        unknown_key = credit("1000.00")
        wrong_key = credit("1000.00")
        copied = credit("1000.00")
        via_retry_topic = credit("1000.00")
        forged: list[tuple[str, bytes, dict[str, str]]] = [
            (submitted, no_signature, crm_headers(account_id, no_signature) | {"ce_signature": ""}),
            (
                submitted,
                wrong_key,
                crm_headers(account_id, wrong_key, secret=secrets.token_hex(32)),
            ),
            (
                submitted,
                unknown_key,
                crm_headers(account_id, unknown_key, kid="mallory", secret=secrets.token_hex(32)),
            ),
            # signed as 5.00, sent as 1000.00
            (submitted, tampered, crm_headers(account_id, tampered.replace(b"1000.00", b"5.00"))),
            # the genuine command's signature on another command
            (
                submitted,
                copied,
                crm_headers(account_id, copied)
                | {name: genuine_headers[name] for name in ("ce_signature", "ce_signaturekid")},
            ),
            # straight onto the retry DLQ, as if it had failed once
            (
                prefix + topics.TRANSACTIONS_DLQ,
                via_retry_topic,
                {
                    "ce_id": str(uuid.uuid4()),
                    "ce_type": "transaction.submitted",
                    "original_topic": topics.TRANSACTIONS_SUBMITTED,
                    "attempts": "1",
                },
            ),
        ]
        before = await counts(bank)
        async with workers(bank, "processor", "dlq"):
            for topic, value, headers in forged:
                await produce_raw(
                    kafka_bootstrap(), topic, value, key=account_id.encode(), headers=headers
                )
            await produce_raw(
                kafka_bootstrap(),
                submitted,
                genuine,
                key=account_id.encode(),
                headers=genuine_headers,
            )
            dead = await consume(
                kafka_bootstrap(),
                topics.TRANSACTIONS_PERMANENT_DLQ,
                prefix=prefix,
                until=lambda ms: len(ms) >= len(forged),
                timeout_seconds=SETTLE_TIMEOUT_SECONDS,
            )
            genuine_id = json.loads(genuine)["transaction_id"]
            location = f"/api/v1/transactions/{genuine_id}"
            await settle(bank, location, staff, "completed")  # the genuine one applies

        assert len(dead) == len(forged)
        by_value = {message.value: message for message in dead}
        expected = {
            no_signature: "missing signature",
            wrong_key: "bad signature",
            unknown_key: "unknown signing key",
            tampered: "bad signature",
            copied: "bad signature",
            via_retry_topic: "missing signature",
        }
        for value, text in expected.items():
            letter = by_value[value]
            assert letter.headers["error"] == f"unauthenticated command: {text}"
            assert letter.headers["error_type"] == "UnauthenticatedCommand"
        assert by_value[via_retry_topic].headers["original_topic"] == topics.TRANSACTIONS_SUBMITTED
        assert (refused(bank, "missing"), refused(bank, "unknown_key")) == (2, 1)
        assert refused(bank, "bad_signature") == 3
        # Only the genuine 5.00 moved; no forged command left a leg or an event.
        assert await bank.balance(account_id, staff) == Decimal("55.00")
        forged_ids = [json.loads(value)["transaction_id"] for _, value, _ in forged]
        assert await referencing(bank, forged_ids) == []
        legs, _ = await counts(bank)
        assert legs == before[0] + len(await referencing_legs(bank, genuine_id))


async def referencing_legs(bank: Bank, transaction_id: str) -> list[Any]:
    async with bank.container.database.read() as connection:
        rows = await connection.execute(
            select(transactions.c.transaction_id).where(
                transactions.c.transaction_id == uuid.UUID(transaction_id)
            )
        )
        return list(rows.all())


@pytest.mark.postgres
async def test_the_async_path_signs_its_own_commands_end_to_end(postgres_url: str) -> None:
    async with kafka_bank(postgres_url) as (bank, prefix):
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="50.00")
        async with workers(bank, "relay", "processor", "dlq"):
            accepted = await bank.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "20.00", "currency": "USD"},
                headers={**customer, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
            await settle(bank, accepted.headers["Location"], customer, "completed")
        assert await bank.balance(account_id, customer) == Decimal("30.00")
        [command] = await consume(
            kafka_bootstrap(),
            topics.TRANSACTIONS_SUBMITTED,
            prefix=prefix,
            until=lambda ms: len(ms) >= 1,
        )
        assert command.headers["ce_signaturekid"] == "bank"
        KEYRING.verify(command)  # what any holder of the bank's key can check
        assert (refused(bank, "missing"), refused(bank, "bad_signature")) == (0, 0)
