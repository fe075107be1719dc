"""A token's user as the users table says now, read at most once per interval per user.

The unit tests run on the in-memory store with a clock the test moves; the integration tests
run two instances on one real database and show what a user sees at both doors: once an
admin deactivates them (or changes their role) on one instance, every instance follows
within ``TOKEN_USER_RECHECK_SECONDS``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import grpc
import jwt
import pytest
from sqlalchemy import event, func, select

from banking.auth.current_users import USERS_REMEMBERED_MAX, CurrentUsers
from banking.domain.errors import Unauthenticated
from banking.domain.records import Owner
from banking.domain.roles import Actor, Role
from banking.grpc.client import BankingClient, BankingClientError
from banking.storage.tables import users as users_table
from tests.auth.conftest import (
    PASSWORD,
    Instance,
    customer_with_account,
    instance,
    login,
    refused_over_grpc,
)
from tests.conftest import make_settings
from tests.support.memory_store import MemoryLedgerStore, MemoryUnitOfWork

RECHECK_SECONDS = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingUnitOfWork(MemoryUnitOfWork):
    """The in-memory unit of work, counting how often the users are read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[MemoryLedgerStore]:
        self.reads += 1
        async with super().read() as store:
            yield store


def add_user(
    books: CountingUnitOfWork, role: Role = Role.CUSTOMER, *, active: bool = True
) -> Actor:
    user = Owner(uuid4(), role, active, f"user-{len(books.books.owners)}")
    books.books.owners[user.user_id] = user
    return user.as_actor()


def change(books: CountingUnitOfWork, user_id: UUID, **fields: object) -> None:
    user = books.books.owners[user_id]
    books.books.owners[user_id] = Owner(
        user_id,
        fields.get("role", user.role),  # type: ignore[arg-type]
        fields.get("is_active", user.is_active),  # type: ignore[arg-type]
        user.username,
    )


@pytest.fixture
def books() -> CountingUnitOfWork:
    return CountingUnitOfWork()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(books: CountingUnitOfWork, clock: Clock) -> CurrentUsers:
    return CurrentUsers(books, recheck_seconds=RECHECK_SECONDS, clock=clock)


async def test_a_user_is_read_once_per_interval(
    users: CurrentUsers, books: CountingUnitOfWork, clock: Clock
) -> None:
    alice = add_user(books)
    for _ in range(100):
        assert await users.actor(alice) == alice
        clock.now += 0.1  # 10 seconds of requests
    assert books.reads == 1

    clock.now += RECHECK_SECONDS
    assert await users.actor(alice) == alice
    assert books.reads == 2


async def test_a_deactivated_user_is_refused_once_the_interval_has_passed(
    users: CurrentUsers, books: CountingUnitOfWork, clock: Clock
) -> None:
    alice = add_user(books)
    assert await users.actor(alice) == alice
    change(books, alice.user_id, is_active=False)

    clock.now += RECHECK_SECONDS - 0.001
    assert await users.actor(alice) == alice  # what this process read, not older than the bound
    clock.now += 0.001
    with pytest.raises(Unauthenticated, match="not active"):
        await users.actor(alice)
    with pytest.raises(Unauthenticated):  # and it stays refused, without another read
        await users.actor(alice)
    assert books.reads == 2

    change(books, alice.user_id, is_active=True)
    clock.now += RECHECK_SECONDS
    assert await users.actor(alice) == alice


async def test_the_current_role_and_name_apply_not_the_tokens(
    users: CurrentUsers, books: CountingUnitOfWork, clock: Clock
) -> None:
    teller = add_user(books, Role.TELLER)
    claimed_admin = Actor(teller.user_id, "someone-else", Role.ADMIN)  # an old token's claims
    assert await users.actor(claimed_admin) == teller

    change(books, teller.user_id, role=Role.CUSTOMER)
    clock.now += RECHECK_SECONDS
    current = await users.actor(teller)
    assert current.role is Role.CUSTOMER
    assert not current.can_credit


async def test_a_user_who_does_not_exist_is_refused(
    users: CurrentUsers, books: CountingUnitOfWork
) -> None:
    ghost = Actor(uuid4(), "ghost", Role.ADMIN)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await users.actor(ghost)
    assert books.reads == 1  # remembered too: a flood of such tokens costs one read


async def test_forget_reads_the_user_again_at_once(
    users: CurrentUsers, books: CountingUnitOfWork
) -> None:
    alice = add_user(books)
    assert await users.actor(alice) == alice
    change(books, alice.user_id, is_active=False)
    users.forget(alice.user_id)
    with pytest.raises(Unauthenticated):
        await users.actor(alice)


class ReadThenWait(MemoryUnitOfWork):
    """Reads the books as they are when a read begins, and answers once released."""

    def __init__(self, books: CountingUnitOfWork) -> None:
        super().__init__(books.books)
        self.release = asyncio.Event()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[MemoryLedgerStore]:
        as_read = self.books.snapshot()
        await self.release.wait()
        yield MemoryLedgerStore(as_read)


async def test_a_read_that_began_before_a_change_is_not_remembered(
    books: CountingUnitOfWork, clock: Clock
) -> None:
    """A request reads the user; an admin deactivates them on this instance meanwhile: the
    stale answer serves that one request but is not kept for the next ones."""
    alice = add_user(books)
    slow = ReadThenWait(books)
    users = CurrentUsers(slow, recheck_seconds=RECHECK_SECONDS, clock=clock)
    in_flight = asyncio.create_task(users.actor(alice))
    await asyncio.sleep(0)  # the read has begun
    change(books, alice.user_id, is_active=False)
    users.forget(alice.user_id)
    slow.release.set()
    assert await in_flight == alice
    with pytest.raises(Unauthenticated):
        await users.actor(alice)


async def test_zero_seconds_reads_every_time(books: CountingUnitOfWork, clock: Clock) -> None:
    users = CurrentUsers(books, recheck_seconds=0, clock=clock)
    alice = add_user(books)
    for _ in range(3):
        await users.actor(alice)
    assert books.reads == 3


async def test_what_is_remembered_is_bounded(
    users: CurrentUsers, books: CountingUnitOfWork
) -> None:
    first = add_user(books)
    await users.actor(first)
    for _ in range(USERS_REMEMBERED_MAX):
        await users.actor(add_user(books))
    reads = books.reads
    await users.actor(first)  # the oldest entry made room: read again
    assert books.reads == reads + 1


# --- two instances on one database, both doors -----------------------------------------------

BOUND_SECONDS = 1.0
# Time for the requests themselves on a loaded 2-core machine, on top of the bound.
MARGIN_SECONDS = 1.5
POLL_SECONDS = 0.05


async def within_the_bound(happened: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``happened()`` is true; fails when that takes longer than the bound."""
    started = time.monotonic()
    while not await happened():
        elapsed = time.monotonic() - started
        assert elapsed < BOUND_SECONDS + MARGIN_SECONDS, f"not within the bound: {elapsed:.2f}s"
        await asyncio.sleep(POLL_SECONDS)
    return time.monotonic() - started


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def subject(token: str) -> str:
    sub: str = jwt.decode(token, options={"verify_signature": False})["sub"]
    return sub


async def test_a_deactivated_users_tokens_stop_working_on_every_instance_within_the_bound(
    database_url: str,
) -> None:
    settings = make_settings(database_url, token_user_recheck_seconds=BOUND_SECONDS)
    async with instance(settings) as admin_side, instance(settings) as other:
        _, admin = await admin_side.bank.user(Role.ADMIN)
        username, account_id = await customer_with_account(admin_side.bank)
        token = await login(admin_side.bank, username)
        # The other instance has seen the customer (and remembers them as active).
        assert (await other.rest_balance(token, account_id)).status_code == 200
        assert await other.grpc_balance(token, account_id) == "25.00"

        deactivated = await admin_side.bank.client.patch(
            f"/api/v1/users/{subject(token)}", json={"is_active": False}, headers=admin
        )
        assert deactivated.status_code == 200, deactivated.text
        assert deactivated.json()["is_active"] is False

        # At once on the instance that made the change.
        here = await admin_side.rest_balance(token, account_id)
        assert here.status_code == 401
        assert here.json()["error"]["code"] == "UNAUTHENTICATED"
        assert here.json()["error"]["message"] == "the user of this token is not active"
        assert "available_balance" not in here.text
        assert refused_over_grpc(await admin_side.grpc_balance(token, account_id))

        # Within the bound on the other one, at both doors.
        async def rest_refused() -> bool:
            return (await other.rest_balance(token, account_id)).status_code == 401

        async def grpc_refused() -> bool:
            return refused_over_grpc(await other.grpc_balance(token, account_id))

        await within_the_bound(rest_refused)
        await within_the_bound(grpc_refused)
        # Signing in again is refused as well (it always was for inactive users).
        again = await other.bank.client.post(
            "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert again.status_code == 401

        # Reactivated: the same token works again, within the bound.
        reactivated = await admin_side.bank.client.patch(
            f"/api/v1/users/{subject(token)}", json={"is_active": True}, headers=admin
        )
        assert reactivated.status_code == 200

        async def rest_accepted() -> bool:
            return (await other.rest_balance(token, account_id)).status_code == 200

        await within_the_bound(rest_accepted)
        assert await other.grpc_balance(token, account_id) == "25.00"


async def test_a_role_downgrade_applies_to_existing_tokens_within_the_bound(
    database_url: str,
) -> None:
    """A teller demoted to customer can no longer see others' accounts or credit (REST or
    gRPC) with the token they got as a teller; an admin demoted to auditor can no longer
    create users."""
    settings = make_settings(database_url, token_user_recheck_seconds=BOUND_SECONDS)
    async with instance(settings) as admin_side, instance(settings) as other:
        _, admin = await admin_side.bank.user(Role.ADMIN)
        teller_id, teller = await admin_side.bank.user(Role.TELLER)
        former_admin_id, former_admin = await admin_side.bank.user(Role.ADMIN)
        _, account_id = await customer_with_account(admin_side.bank)
        account = f"/api/v1/accounts/{account_id}"
        assert (await other.bank.client.get(account, headers=teller)).status_code == 200
        assert (await other.bank.client.get(account, headers=former_admin)).status_code == 200

        for user_id, role in ((teller_id, "customer"), (former_admin_id, "auditor")):
            demoted = await admin_side.bank.client.patch(
                f"/api/v1/users/{user_id}", json={"role": role}, headers=admin
            )
            assert demoted.status_code == 200, demoted.text
            assert demoted.json()["role"] == role

        async def teller_is_a_customer() -> bool:
            # A customer does not see another customer's account: 404, as DESIGN.md says.
            return (await other.bank.client.get(account, headers=teller)).status_code == 404

        async def admin_is_an_auditor() -> bool:
            # An empty change: an admin is told there is nothing to change (422), anyone
            # else that they may not manage users (403). Nothing changes either way.
            response = await other.bank.client.patch(
                f"/api/v1/users/{teller_id}", json={}, headers=former_admin
            )
            assert response.status_code in (403, 422), response.text
            return response.status_code == 403

        await within_the_bound(teller_is_a_customer)
        await within_the_bound(admin_is_an_auditor)
        before = await other.bank.snapshot()
        users_before = await user_count(other)
        credit = {"account_id": account_id, "amount": "1.00", "currency": "USD"}
        over_rest = await other.bank.client.post(
            "/api/v1/transactions/credit", json=credit, headers=teller
        )
        assert over_rest.status_code == 403, over_rest.text
        assert over_rest.json()["error"]["code"] == "FORBIDDEN"
        async with BankingClient(other.grpc_target, bearer_of(teller)) as client:
            with pytest.raises(BankingClientError) as raised:
                await client.credit(account_id, "1.00", "USD")
        assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED

        created = await other.bank.client.post(
            "/api/v1/users",
            json={
                "username": "made-by-a-former-admin",
                "email": "former@example.com",
                "password": PASSWORD,
                "role": "admin",
            },
            headers=former_admin,
        )
        assert created.status_code == 403, created.text
        assert created.json()["error"]["code"] == "FORBIDDEN"
        assert await other.bank.snapshot() == before
        assert await user_count(other) == users_before
        nobody = await other.bank.client.post(
            "/api/v1/auth/token",
            data={"username": "made-by-a-former-admin", "password": PASSWORD},
        )
        assert nobody.status_code == 401


async def user_count(door: Instance) -> int:
    async with door.bank.container.database.read() as connection:
        count: int = (
            await connection.execute(select(func.count()).select_from(users_table))
        ).scalar_one()
    return count


def bearer_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_a_balance_stream_of_a_user_deactivated_meanwhile_ends_within_the_bound(
    database_url: str,
) -> None:
    """WatchBalance runs for up to an hour on the token it started with: it rechecks the
    user as it goes, so it ends UNAUTHENTICATED once they are deactivated elsewhere."""
    settings = make_settings(database_url, token_user_recheck_seconds=BOUND_SECONDS)
    async with instance(settings) as admin_side, instance(settings) as other:
        _, admin = await admin_side.bank.user(Role.ADMIN)
        username, account_id = await customer_with_account(admin_side.bank)
        token = await login(admin_side.bank, username)
        seen: list[str] = []
        async with BankingClient(other.grpc_target, token) as client:
            stream = client.watch_balance(account_id)
            seen.append(str((await anext(stream)).available_balance))
            deactivated = await admin_side.bank.client.patch(
                f"/api/v1/users/{subject(token)}", json={"is_active": False}, headers=admin
            )
            assert deactivated.status_code == 200
            started = time.monotonic()
            # Bounded: a stream that is never ended would otherwise run for an hour.
            async with asyncio.timeout(BOUND_SECONDS + MARGIN_SECONDS):
                with pytest.raises(BankingClientError) as ended:
                    async for balance in stream:  # no change: nothing more is sent
                        seen.append(str(balance.available_balance))
            elapsed = time.monotonic() - started

    assert seen == ["25.00"]
    assert ended.value.status is grpc.StatusCode.UNAUTHENTICATED
    assert ended.value.message == "the user of this token is not active"
    assert elapsed < BOUND_SECONDS + MARGIN_SECONDS


async def test_many_requests_of_one_user_read_the_users_table_once(database_url: str) -> None:
    """The hot path stays cheap: the token check is remembered per token and the user check
    per user, so fifty requests within the interval read the users table once."""
    async with instance(make_settings(database_url)) as door:
        username, account_id = await customer_with_account(door.bank)
        token = await login(door.bank, username)
        user_reads: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "FROM users" in statement:
                user_reads.append(statement)

        engine = door.bank.container.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(50):
                assert (await door.rest_balance(token, account_id)).status_code == 200
            for _ in range(10):
                assert await door.grpc_balance(token, account_id) == "25.00"
        finally:
            event.remove(engine, "before_cursor_execute", count)

    assert len(user_reads) == 1, user_reads
