"""gRPC ``CreateAccount`` with an idempotency key (``idempotency-key`` metadata or the request
field) and ``ListAccounts`` with a cursor, on SQLite and PostgreSQL: the same rules as REST."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from banking.domain.roles import Role
from banking.grpc.gen import accounts_pb2, accounts_pb2_grpc
from banking.storage.tables import accounts, idempotency_keys
from tests.conftest import Bank
from tests.grpc.conftest import GrpcBank


async def _counts(bank: Bank) -> dict[str, Any]:
    async with bank.container.database.read() as connection:
        counted = {
            table.name: (
                await connection.execute(select(func.count()).select_from(table))
            ).scalar_one()
            for table in (accounts, idempotency_keys)
        }
    return {**counted, **await bank.snapshot()}


def _stub(grpc_bank: GrpcBank) -> Any:
    """The raw stub (typed Any: its generated types are the synchronous API's)."""
    return accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())


def _metadata(headers: dict[str, str], key: str | None = None) -> tuple[tuple[str, str], ...]:
    auth = (("authorization", headers["Authorization"]),)
    return auth if key is None else (*auth, ("idempotency-key", key))


async def _create(
    stub: Any,
    headers: dict[str, str],
    key: str | None,
    **fields: str,
) -> tuple[accounts_pb2.CreateAccountResponse, bool]:
    request = accounts_pb2.CreateAccountRequest(
        **{"account_type": "checking", "currency": "USD", **fields}
    )
    call = stub.CreateAccount(request, metadata=_metadata(headers, key))
    response = await call
    trailing = dict(await call.trailing_metadata() or ())
    return response, trailing.get("idempotent-replayed") == "true"


async def test_a_retry_with_the_metadata_key_answers_the_same_account(
    grpc_bank: GrpcBank,
) -> None:
    _, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    before = await _counts(grpc_bank.bank)

    first, first_replayed = await _create(stub, customer, "g-1")
    again, again_replayed = await _create(stub, customer, "g-1")

    assert (first_replayed, again_replayed) == (False, True)
    assert again.account == first.account
    assert (await _counts(grpc_bank.bank))["accounts"] == before["accounts"] + 1


async def test_the_request_field_is_a_key_too_and_both_must_agree(grpc_bank: GrpcBank) -> None:
    _, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    first, _ = await _create(stub, customer, None, idempotency_key="field-key")
    again, replayed = await _create(stub, customer, "field-key", idempotency_key="field-key")
    assert replayed and again.account == first.account
    before = await _counts(grpc_bank.bank)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(stub, customer, "one", idempotency_key="other")

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await _counts(grpc_bank.bank) == before


async def test_the_same_key_with_other_parameters_is_already_exists_and_opens_nothing(
    grpc_bank: GrpcBank,
) -> None:
    _, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    await _create(stub, customer, "k")
    before = await _counts(grpc_bank.bank)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(stub, customer, "k", currency="EUR")

    assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "currency differs" in (raised.value.details() or "")
    assert await _counts(grpc_bank.bank) == before


# gRPC itself refuses to send metadata with control characters: that one goes in the field.
@pytest.mark.parametrize(
    ("metadata_key", "field_key"),
    [("", ""), ("x" * 252, ""), (None, "x" * 252), (None, "tab\there")],
    ids=["empty", "too-long", "too-long-field", "unprintable-field"],
)
async def test_a_bad_key_is_invalid_argument_and_opens_nothing(
    grpc_bank: GrpcBank, metadata_key: str | None, field_key: str
) -> None:
    _, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    before = await _counts(grpc_bank.bank)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(stub, customer, metadata_key, idempotency_key=field_key)

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await _counts(grpc_bank.bank) == before


async def test_a_key_of_one_caller_does_not_collide_with_anothers(grpc_bank: GrpcBank) -> None:
    _, alice = await grpc_bank.bank.user(Role.CUSTOMER)
    _, bob = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    for_alice, _ = await _create(stub, alice, "same")
    for_bob, replayed = await _create(stub, bob, "same")
    assert not replayed
    assert for_alice.account.account_id != for_bob.account.account_id


async def test_list_accounts_walks_every_own_account_exactly_once(grpc_bank: GrpcBank) -> None:
    _, staff = await grpc_bank.bank.user(Role.TELLER)
    alice_id, alice = await grpc_bank.bank.user(Role.CUSTOMER)
    bob_id, _ = await grpc_bank.bank.user(Role.CUSTOMER)
    mine = {await grpc_bank.bank.account(alice_id, staff) for _ in range(5)}
    await grpc_bank.bank.account(bob_id, staff)
    stub = _stub(grpc_bank)

    seen: list[str] = []
    cursor = ""
    while True:
        page = await stub.ListAccounts(
            accounts_pb2.ListAccountsRequest(page_size=2, cursor=cursor), metadata=_metadata(alice)
        )
        seen.extend(account.account_id for account in page.accounts)
        if not page.next_cursor:
            break
        cursor = page.next_cursor

    assert len(seen) == len(mine) and set(seen) == mine


@pytest.mark.parametrize(
    "request_fields",
    [{"cursor": "bm90LWEtY3Vyc29y"}, {"page_size": -1}, {"page_size": 100_000}],
    ids=["cursor", "negative", "too-big"],
)
async def test_list_accounts_refuses_a_bad_cursor_or_page_size(
    grpc_bank: GrpcBank, request_fields: dict[str, Any]
) -> None:
    _, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(grpc_bank)
    before = await _counts(grpc_bank.bank)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAccounts(
            accounts_pb2.ListAccountsRequest(**request_fields), metadata=_metadata(customer)
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await _counts(grpc_bank.bank) == before


@pytest.mark.postgres
async def test_twenty_concurrent_duplicates_open_one_account(pg_grpc_bank: GrpcBank) -> None:
    _, staff = await pg_grpc_bank.bank.user(Role.TELLER)
    customer_id, _ = await pg_grpc_bank.bank.user(Role.CUSTOMER)
    stub = _stub(pg_grpc_bank)
    before = await _counts(pg_grpc_bank.bank)

    answers = await asyncio.gather(
        *(_create(stub, staff, "burst", customer_id=str(customer_id)) for _ in range(20))
    )

    assert len({response.account.account_id for response, _ in answers}) == 1
    assert sum(not replayed for _, replayed in answers) == 1
    assert (await _counts(pg_grpc_bank.bank))["accounts"] == before["accounts"] + 1
