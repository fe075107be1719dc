"""Metadata on movements and accounts, through the core: stored on every leg, carried by the
events and the asynchronous command, part of the idempotency fingerprint, searchable, bounded.

The scenarios use the ``Core`` only, so ``tests/storage/test_metadata_contract.py`` runs them
on SQLite and PostgreSQL too."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from banking.domain.errors import IdempotencyConflict, TransactionNotFound, ValidationFailed
from banking.domain.records import TransactionStatus, TransactionType
from banking.domain.roles import Actor
from banking.ledger.metadata import (
    METADATA_KEY_LENGTH_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_LENGTH_MAX,
)
from banking.ledger.statements import TransactionSearch
from tests.ledger.test_lookup_statements import everything, service
from tests.ledger.world import (
    DEBIT,
    KINDS,
    TRANSFER,
    Path,
    ask,
    last_command,
    make_world,
    move,
    request,
)
from tests.support.ledger import Core

LABELS = {"order_id": "42", "channel": "web"}
TRANSACTION_EVENTS = ("transaction.completed", "transaction.failed")


def _labelled(kind: TransactionType, world: Any, **labels: str) -> Any:
    account = world.usd
    asked = request(kind, account, "2.00", destination=world.counterpart(account))
    return replace(asked, metadata=labels or LABELS)


async def _legs_of(core: Core, actor: Actor, transaction_id: Any) -> list[Any]:
    """The initiating leg and, for a transfer, its receiving leg, as the store reads them."""
    first = await core.movements.get_transaction(actor, transaction_id)
    legs = [first]
    if first.related_transaction_id is not None:
        legs.append(await core.movements.get_transaction(actor, first.related_transaction_id))
    return legs


@pytest.mark.parametrize("kind", KINDS, ids=[kind.value for kind in KINDS])
async def test_a_movements_metadata_is_on_each_of_its_legs_and_their_events(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    result = await move(core, world.mover(kind), kind, _labelled(kind, world))

    assert result.transaction.metadata == LABELS
    legs = await _legs_of(core, world.teller, result.transaction.transaction_id)
    assert len(legs) == (2 if kind is TRANSFER else 1)
    assert [dict(leg.metadata) for leg in legs] == [LABELS] * len(legs)
    events = [
        payload
        for _topic, _key, event_type, payload in await core.outbox()
        if event_type in TRANSACTION_EVENTS
        and payload["transaction_id"] in {str(leg.transaction_id) for leg in legs}
    ]
    # The transaction event v3 carries it as JSON text (sorted keys), in both encodings.
    assert [json.loads(event["metadata"]) for event in events] == [LABELS] * len(legs)


async def test_a_movement_without_metadata_has_an_empty_map(core: Core) -> None:
    world = await make_world(core)
    result = await move(core, world.alice, DEBIT, request(DEBIT, world.usd, "1.00"))

    stored = await core.movements.get_transaction(world.alice, result.transaction.transaction_id)
    assert dict(stored.metadata) == {}


@pytest.mark.parametrize("kind", KINDS, ids=[kind.value for kind in KINDS])
async def test_a_submitted_command_carries_the_metadata_to_the_legs_it_applies(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    submitted = await ask(core, Path.SUBMIT, world.mover(kind), kind, _labelled(kind, world))
    assert submitted.transaction.status is TransactionStatus.PENDING
    assert submitted.transaction.metadata == LABELS

    command = await last_command(core)
    assert dict(command.request.metadata) == LABELS
    outcome = await core.movements.apply_command(command)

    assert outcome.leg is not None and outcome.leg.status is TransactionStatus.COMPLETED
    legs = await _legs_of(core, world.teller, outcome.leg.transaction_id)
    assert [dict(leg.metadata) for leg in legs] == [LABELS] * len(legs)


@pytest.mark.parametrize("path", [Path.SYNC, Path.SUBMIT], ids=str)
async def test_a_replay_compares_the_metadata_in_any_key_order(core: Core, path: Path) -> None:
    world = await make_world(core)
    first = replace(
        request(DEBIT, world.usd, "3.00", reference_id="order-42"),
        metadata={"order_id": "42", "channel": "web"},
    )
    original = await ask(core, path, world.alice, DEBIT, first)
    before = await core.books()

    again = await ask(
        core,
        path,
        world.alice,
        DEBIT,
        replace(first, metadata={"channel": "web", "order_id": "42"}),
    )

    assert again.replayed
    assert again.transaction.transaction_id == original.transaction.transaction_id
    assert await core.books() == before


@pytest.mark.parametrize(
    "other",
    [{"order_id": "43", "channel": "web"}, {"order_id": "42"}, {}],
    ids=["other-value", "fewer-keys", "none"],
)
async def test_the_same_key_with_other_metadata_is_a_conflict(
    core: Core, other: dict[str, str]
) -> None:
    world = await make_world(core)
    first = replace(
        request(DEBIT, world.usd, "3.00", reference_id="order-42"),
        metadata={"order_id": "42", "channel": "web"},
    )
    await move(core, world.alice, DEBIT, first)
    before = await core.books()

    with pytest.raises(IdempotencyConflict) as conflict:
        await move(core, world.alice, DEBIT, replace(first, metadata=other))

    assert conflict.value.details["fields"] == ["metadata"]
    assert "metadata differs" in conflict.value.message

    assert await core.books() == before


async def test_a_key_first_used_without_metadata_conflicts_with_metadata(core: Core) -> None:
    world = await make_world(core)
    plain = request(DEBIT, world.usd, "3.00", reference_id="plain")
    await move(core, world.alice, DEBIT, plain)
    before = await core.books()

    with pytest.raises(IdempotencyConflict):
        await move(core, world.alice, DEBIT, replace(plain, metadata={"order_id": "1"}))
    replayed = await move(core, world.alice, DEBIT, plain)

    assert replayed.replayed
    assert await core.books() == before


BAD_MAPS: list[Any] = [
    {f"k{n}": "v" for n in range(METADATA_KEYS_MAX + 1)},
    {"k" * (METADATA_KEY_LENGTH_MAX + 1): "v"},
    {"": "v"},
    {"order id": "v"},
    {"ordér": "v"},
    {"order_id": "v" * (METADATA_VALUE_LENGTH_MAX + 1)},
    {"order_id": "line\nbreak"},
    {"order_id": 42},
]
BAD_IDS = [
    "too-many-keys",
    "long-key",
    "empty-key",
    "space-in-key",
    "non-ascii-key",
    "long-value",
    "control-character",
    "not-a-string",
]


@pytest.mark.parametrize("path", [Path.SYNC, Path.SUBMIT], ids=str)
@pytest.mark.parametrize("bad", BAD_MAPS, ids=BAD_IDS)
async def test_bad_metadata_is_refused_and_changes_nothing(
    core: Core, bad: Any, path: Path
) -> None:
    world = await make_world(core)
    before = await core.books()

    for kind in KINDS:
        with pytest.raises(ValidationFailed) as refused:
            await ask(
                core, path, world.mover(kind), kind, replace(_labelled(kind, world), metadata=bad)
            )
        assert refused.value.field == "metadata"

    assert await core.books() == before


async def test_the_largest_metadata_the_rules_allow_is_stored_whole(core: Core) -> None:
    world = await make_world(core)
    largest = {
        f"{n:02d}".rjust(METADATA_KEY_LENGTH_MAX, "k"): "é" * METADATA_VALUE_LENGTH_MAX
        for n in range(METADATA_KEYS_MAX)
    }
    result = await move(
        core, world.alice, DEBIT, replace(request(DEBIT, world.usd, "1.00"), metadata=largest)
    )

    stored = await core.movements.get_transaction(world.alice, result.transaction.transaction_id)
    assert dict(stored.metadata) == largest


async def test_a_search_by_metadata_finds_the_callers_legs_with_every_pair(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    mine = await move(
        core,
        world.alice,
        DEBIT,
        replace(request(DEBIT, world.usd, "1.00"), metadata={"order_id": "42", "shop": "a"}),
    )
    other_shop = await move(
        core,
        world.alice,
        DEBIT,
        replace(request(DEBIT, world.usd, "1.00"), metadata={"order_id": "42", "shop": "b"}),
    )
    await move(
        core,
        world.alice,
        DEBIT,
        replace(request(DEBIT, world.usd, "1.00"), metadata={"order_id": "420"}),
    )
    bobs = await move(
        core,
        world.bob,
        DEBIT,
        replace(request(DEBIT, world.usd_bob, "1.00"), metadata={"order_id": "42"}),
    )

    def ids(legs: list[Any]) -> set[Any]:
        return {leg.transaction_id for leg in legs}

    by_order = TransactionSearch(metadata={"order_id": "42"})
    assert ids(await everything(statements, world.alice, by_order)) == {
        mine.transaction.transaction_id,
        other_shop.transaction.transaction_id,
    }
    assert ids(await everything(statements, world.bob, by_order)) == {
        bobs.transaction.transaction_id
    }
    assert ids(await everything(statements, world.teller, by_order)) == {
        mine.transaction.transaction_id,
        other_shop.transaction.transaction_id,
        bobs.transaction.transaction_id,
    }
    both = TransactionSearch(metadata={"order_id": "42", "shop": "a"})
    assert ids(await everything(statements, world.alice, both)) == {mine.transaction.transaction_id}
    absent = TransactionSearch(metadata={"order_id": "42", "shop": "z"})
    assert await everything(statements, world.teller, absent) == []


async def test_a_search_by_metadata_finds_each_side_of_a_transfer(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    sent = await move(
        core,
        world.alice,
        TRANSFER,
        replace(
            request(TRANSFER, world.usd, "2.00", destination=world.usd_bob),
            metadata={"invoice": "inv-7"},
        ),
    )
    search = TransactionSearch(metadata={"invoice": "inv-7"})

    alice_sees = await everything(statements, world.alice, search)
    bob_sees = await everything(statements, world.bob, search)

    assert [leg.transaction_id for leg in alice_sees] == [sent.transaction.transaction_id]
    assert [leg.transaction_type for leg in bob_sees] == [TransactionType.TRANSFER_IN]
    assert bob_sees[0].related_transaction_id == sent.transaction.transaction_id


@pytest.mark.parametrize("bad", BAD_MAPS[:-1], ids=BAD_IDS[:-1])
async def test_a_search_by_bad_metadata_is_refused(core: Core, bad: dict[str, str]) -> None:
    world = await make_world(core)

    with pytest.raises(ValidationFailed) as refused:
        await service(core).search(world.alice, TransactionSearch(metadata=bad))

    assert refused.value.field == "metadata"


async def test_an_accounts_metadata_is_stored_and_part_of_its_creation_key(core: Core) -> None:
    world = await make_world(core)
    labels = {"segment": "retail", "branch": "0042"}

    opened = await core.accounts.open_once(
        world.teller,
        account_type="savings",
        currency="USD",
        customer_id=world.alice.user_id,
        idempotency_key="open-savings",
        metadata=labels,
    )
    replayed = await core.accounts.open_once(
        world.teller,
        account_type="savings",
        currency="USD",
        customer_id=world.alice.user_id,
        idempotency_key="open-savings",
        metadata={"branch": "0042", "segment": "retail"},
    )
    before = await core.books()
    with pytest.raises(IdempotencyConflict) as conflict:
        await core.accounts.open_once(
            world.teller,
            account_type="savings",
            currency="USD",
            customer_id=world.alice.user_id,
            idempotency_key="open-savings",
            metadata={"segment": "business"},
        )

    assert dict(opened.account.metadata) == labels
    assert replayed.replayed and replayed.account.account_id == opened.account.account_id
    assert dict((await core.accounts.get(world.alice, opened.account.account_id)).metadata) == (
        labels
    )
    assert "metadata" in conflict.value.message
    assert await core.books() == before


async def test_an_account_with_bad_metadata_is_not_opened(core: Core) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.open_once(
            world.teller,
            account_type="checking",
            currency="USD",
            customer_id=world.alice.user_id,
            idempotency_key=None,
            metadata={"bad key": "v"},
        )

    assert refused.value.field == "metadata"
    assert await core.books() == before


async def test_another_customers_labelled_leg_is_not_found(core: Core) -> None:
    world = await make_world(core)
    bobs = await move(
        core,
        world.bob,
        DEBIT,
        replace(request(DEBIT, world.usd_bob, "1.00"), metadata={"secret": "s"}),
    )

    with pytest.raises(TransactionNotFound):
        await core.movements.get_transaction(world.alice, bobs.transaction.transaction_id)
    assert (
        await everything(service(core), world.alice, TransactionSearch(metadata={"secret": "s"}))
        == []
    )
