"""The clients of the fault suite: random transfers, debits and credits with idempotency keys
over REST, every attempt recorded with when it started and ended, where it went and what came
back; and the history that the checks read."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

CURRENCY = "USD"
AMOUNT_CENTS_MAX = 12_000  # up to 120.00 on accounts funded with a few hundred: some decline
# What each kind of movement is, out of 100 (the rest are transfers).
DEBIT_PERCENT = 10
CREDIT_PERCENT = 10
REQUEST_TIMEOUT_SECONDS = 15.0  # above the unit of work's whole retry budget (5 x at most 1 s)
PAUSE_AFTER_UNKNOWN_SECONDS = 0.2
RESOLVE_ATTEMPTS_MAX = 60
RESOLVE_PAUSE_SECONDS = 0.5

# An attempt's result: a business answer, or an unknown outcome (retried later with its key).
OK = "ok"
DECLINED = "declined"
UNAVAILABLE = "unavailable"  # 503 SERVICE_UNAVAILABLE with Retry-After
CONNECTION = "connection"  # refused, reset, closed mid-answer
TIMEOUT = "timeout"
BAD = "bad"  # anything else: a 500, a 503 without Retry-After, an unexpected code
DEFINITE = frozenset({OK, DECLINED})
UNKNOWN = frozenset({UNAVAILABLE, CONNECTION, TIMEOUT})


@dataclass(frozen=True)
class Movement:
    """One money movement a client wants, with its idempotency key."""

    reference_id: str
    kind: str  # transfer, debit or credit
    amount: Decimal
    account_id: str  # the source of a transfer
    destination_account_id: str | None = None

    @property
    def path(self) -> str:
        return f"/api/v1/transactions/{self.kind}"

    def body(self) -> dict[str, str]:
        body = {"amount": str(self.amount), "currency": CURRENCY, "reference_id": self.reference_id}
        if self.kind == "transfer":
            assert self.destination_account_id is not None
            body["source_account_id"] = self.account_id
            body["destination_account_id"] = self.destination_account_id
        else:
            body["account_id"] = self.account_id
        return body

    def effects(self) -> dict[str, Decimal]:
        """What the movement does to each balance when it is applied."""
        if self.kind == "credit":
            return {self.account_id: self.amount}
        if self.kind == "debit":
            return {self.account_id: -self.amount}
        assert self.destination_account_id is not None
        return {self.account_id: -self.amount, self.destination_account_id: self.amount}


@dataclass(frozen=True)
class Attempt:
    """One request of a movement and what came back."""

    reference_id: str
    instance: int
    started: float  # time.monotonic()
    ended: float
    result: str
    detail: str = ""
    resolving: bool = False  # sent after the load, to settle an unknown outcome


@dataclass
class History:
    movements: dict[str, Movement] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def of(self, reference_id: str) -> list[Attempt]:
        return [a for a in self.attempts if a.reference_id == reference_id]

    def final(self) -> dict[str, str]:
        """Each movement's last answer (a business answer once resolved)."""
        last: dict[str, str] = {}
        for attempt in self.attempts:
            last[attempt.reference_id] = attempt.result
        return last

    def counts(self) -> dict[str, int]:
        return dict(Counter(a.result for a in self.attempts))


def classify(response: httpx.Response) -> tuple[str, str]:
    """An answer as one of the results above, with a short detail for the report."""
    status = response.status_code
    code = _error_code(response)
    if status == 200:
        return OK, ""
    if status == 422 and code == "INSUFFICIENT_FUNDS":
        return DECLINED, ""
    if status == 503 and code == "SERVICE_UNAVAILABLE":
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit() and int(retry_after) >= 1:
            return UNAVAILABLE, ""
        return BAD, f"503 without a usable Retry-After ({retry_after!r})"
    return BAD, f"{status} {code}: {response.text[:300]}"


def _error_code(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


class Workload:
    """``clients`` concurrent clients over the API instances at ``bases``."""

    def __init__(
        self,
        *,
        bases: list[str],
        accounts: list[str],
        customer: dict[str, str],
        teller: dict[str, str],
        seed: int,
        run: str,
    ) -> None:
        self.bases = bases
        self.accounts = accounts
        self.customer = customer
        self.teller = teller
        self.seed = seed
        self.run = run
        self.history = History()

    def _movement(self, rng: random.Random, client: int, number: int) -> Movement:
        reference_id = f"{self.run}-c{client}-{number}"
        amount = Decimal(rng.randint(1, AMOUNT_CENTS_MAX)) / 100
        roll = rng.randrange(100)
        if roll < DEBIT_PERCENT:
            return Movement(reference_id, "debit", amount, rng.choice(self.accounts))
        if roll < DEBIT_PERCENT + CREDIT_PERCENT:
            return Movement(reference_id, "credit", amount, rng.choice(self.accounts))
        source, destination = rng.sample(self.accounts, 2)
        return Movement(reference_id, "transfer", amount, source, destination)

    async def send(
        self, client: httpx.AsyncClient, instance: int, movement: Movement, *, resolving: bool
    ) -> Attempt:
        headers = self.teller if movement.kind == "credit" else self.customer
        started = time.monotonic()
        try:
            response = await client.post(
                self.bases[instance] + movement.path, json=movement.body(), headers=headers
            )
            result, detail = classify(response)
        except httpx.TimeoutException as error:
            result, detail = TIMEOUT, type(error).__name__
        except httpx.TransportError as error:
            result, detail = CONNECTION, type(error).__name__
        attempt = Attempt(
            movement.reference_id, instance, started, time.monotonic(), result, detail, resolving
        )
        self.history.attempts.append(attempt)
        return attempt

    async def run_clients(self, clients: int, stop: asyncio.Event) -> None:
        """Each client sends one movement after the other until ``stop``; an unknown outcome
        is left for ``resolve`` and the client goes on (to the other instance after a
        connection error, as a load balancer would)."""
        limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:

            async def one_client(client: int) -> None:
                rng = random.Random(self.seed * 1000 + client)
                instance = client % len(self.bases)
                number = 0
                while not stop.is_set():
                    movement = self._movement(rng, client, number)
                    number += 1
                    self.history.movements[movement.reference_id] = movement
                    attempt = await self.send(http, instance, movement, resolving=False)
                    if attempt.result == CONNECTION:
                        instance = (instance + 1) % len(self.bases)
                    if attempt.result in UNKNOWN:
                        await asyncio.sleep(PAUSE_AFTER_UNKNOWN_SECONDS)

            await asyncio.gather(*(one_client(c) for c in range(clients)))

    async def resolve(self) -> list[str]:
        """Retry every movement whose outcome is unknown with its key until it has a business
        answer (bounded); the references that never got one."""
        final = self.history.final()
        unknown = [r for r, result in final.items() if result in UNKNOWN]
        unresolved: list[str] = []
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as http:

            async def settle(reference_id: str, index: int) -> None:
                movement = self.history.movements[reference_id]
                for attempt_number in range(RESOLVE_ATTEMPTS_MAX):
                    instance = (index + attempt_number) % len(self.bases)
                    attempt = await self.send(http, instance, movement, resolving=True)
                    if attempt.result not in UNKNOWN:
                        return
                    await asyncio.sleep(RESOLVE_PAUSE_SECONDS)
                unresolved.append(reference_id)

            await asyncio.gather(*(settle(r, i) for i, r in enumerate(unknown)))
        return unresolved
