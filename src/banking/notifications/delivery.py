"""The delivery loop: sends due webhook deliveries, signed, and records every attempt.

A delivery is claimed with a lease (its ``next_attempt_at`` moved past the attempt's timeout,
in a short transaction; on PostgreSQL with ``FOR UPDATE SKIP LOCKED``), so two workers never
send the same one at once and no transaction stays open while a receiver answers. Before each
attempt the target is checked again against SSRF and the request goes to the address that was
checked. The body is the delivery's stored JSON, exactly; redirects are not followed; the
whole attempt is bounded by ``WEBHOOK_TIMEOUT_SECONDS``.

A 2xx is success. Anything else (a status, a timeout, a refused connection, a refused target)
is a failed attempt: retried after ``WEBHOOK_BACKOFF_SECONDS * 2^(n-1)`` (at most
``WEBHOOK_BACKOFF_SECONDS_MAX``) until ``WEBHOOK_ATTEMPTS_MAX`` attempts, then the delivery is
``failed``. ``WEBHOOK_DISABLE_AFTER_FAILURES`` failed deliveries in a row disable the webhook,
and its owner gets a ``webhook.disabled`` notification (and a delivery on each of their other
webhooks subscribed to it). The secret and the signature are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import uuid4

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.config import Settings
from banking.domain.clock import utc_now
from banking.domain.roles import Role
from banking.notifications import store
from banking.notifications.fanout import Event, fan_out
from banking.notifications.model import DeliveryStatus, EventType, WebhookStatus
from banking.notifications.observer import DeliveryObserver, Unobserved
from banking.notifications.signing import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from banking.notifications.ssrf import (
    RefusedTarget,
    Resolver,
    Target,
    check_target,
    host_header,
    parse_networks,
    pinned_url,
    system_resolver,
)
from banking.observability.logging import get_logger
from banking.storage.database import Database, is_outage
from banking.storage.tables import users

log = get_logger(__name__)

POLL_SECONDS_DEFAULT: Final = 0.5
BATCH_SIZE_DEFAULT: Final = 20
# A claimed delivery is not picked up again before its attempt could have ended.
LEASE_MARGIN_SECONDS: Final = 10.0
BACKLOG_REPORT_SECONDS: Final = 5.0
ERROR_BACKOFF_SECONDS_MAX: Final = 5.0
ERROR_TEXT_LENGTH_MAX: Final = 500
USER_AGENT: Final = "banking-webhooks/1"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status code, or an error (no answer, refused target)."""

    status_code: int | None
    error: str | None
    duration_ms: int
    started_at: datetime
    refused: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _event_time(payload: str) -> datetime | None:
    try:
        created = json.loads(payload).get("created_at")
        return datetime.fromisoformat(created) if isinstance(created, str) else None
    except (ValueError, AttributeError):
        return None


class WebhookDelivery:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        observer: DeliveryObserver | None = None,
        resolver: Resolver = system_resolver,
        poll_seconds: float = POLL_SECONDS_DEFAULT,
        batch_size: int = BATCH_SIZE_DEFAULT,
    ) -> None:
        self._database = database
        self._timeout_seconds = settings.webhook_timeout_seconds
        self._attempts_max = settings.webhook_attempts_max
        self._backoff_seconds = settings.webhook_backoff_seconds
        self._backoff_seconds_max = settings.webhook_backoff_seconds_max
        self._disable_after = settings.webhook_disable_after_failures
        self._allowed_networks = parse_networks(settings.webhook_allowed_networks)
        self._observer: DeliveryObserver = observer or Unobserved()
        self._resolver = resolver
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New deliveries are waiting: look now instead of at the next poll."""
        self._wake.set()

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt."""
        return float(min(self._backoff_seconds * 2 ** (attempts - 1), self._backoff_seconds_max))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout_seconds),
            trust_env=False,  # no proxy from the environment: the checked address is contacted
            headers={"User-Agent": USER_AGENT},
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; back off (bounded) while the database fails."""
        failures = 0
        loop = asyncio.get_running_loop()
        reported_at = 0.0
        async with self.client() as client:
            while not stop.is_set():
                try:
                    if loop.time() - reported_at >= BACKLOG_REPORT_SECONDS:
                        reported_at = loop.time()
                        await self.report_backlog()
                    sent = await self.deliver_due(client)
                    failures = 0
                except Exception as error:  # noqa: BLE001 - the database is down: wait, retry
                    failures += 1
                    delay = min(ERROR_BACKOFF_SECONDS_MAX, 0.1 * 2**failures)
                    log.warning(
                        "webhook_delivery_loop_failed",
                        error_type=type(error).__name__,
                        error=str(error)[:300],
                        database_unavailable=is_outage(error),
                        retry_in_seconds=delay,
                    )
                    await _wait(stop, None, delay)
                    continue
                if sent < self._batch_size:
                    await _wait(stop, self._wake, self._poll_seconds)

    async def report_backlog(self) -> int:
        async with self._database.read() as connection:
            pending = await store.pending_retries(connection)
        self._observer.webhook_backlog(pending)
        return pending

    async def deliver_due(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim the due deliveries (one batch) and make one attempt of each; how many."""
        self._wake.clear()
        now = utc_now()
        lease = timedelta(seconds=self._timeout_seconds + LEASE_MARGIN_SECONDS)

        async def claim(connection: AsyncConnection) -> list[store.Due]:
            return await store.claim_due(
                connection, now=now, lease_until=now + lease, limit=self._batch_size
            )

        claimed = await self._database.run_in_transaction(claim)
        if not claimed:
            return 0
        if client is None:
            async with self.client() as own:
                await asyncio.gather(*(self._attempt(own, due) for due in claimed))
        else:
            await asyncio.gather(*(self._attempt(client, due) for due in claimed))
        return len(claimed)

    async def _attempt(self, client: httpx.AsyncClient, due: store.Due) -> None:
        if due.webhook_status is not WebhookStatus.ACTIVE:
            await self._drop(due, "webhook disabled")
            return
        outcome = await self._send(client, due)
        await self._record(due, outcome)

    async def _send(self, client: httpx.AsyncClient, due: store.Due) -> Outcome:
        started_at = utc_now()
        loop = asyncio.get_running_loop()
        start = loop.time()

        def took() -> int:
            return int((loop.time() - start) * 1000)

        try:
            target = await check_target(
                due.url, allowed_networks=self._allowed_networks, resolver=self._resolver
            )
        except RefusedTarget as error:
            return Outcome(None, f"refused: {error.message}", took(), started_at, refused=True)
        body = due.payload.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(due.secret, body),
            EVENT_ID_HEADER: str(due.event_id),
            EVENT_TYPE_HEADER: due.event_type,
            DELIVERY_ID_HEADER: str(due.delivery_id),
        }
        try:
            status_code = await asyncio.wait_for(
                self._post(client, target, body, headers), self._timeout_seconds
            )
        except TimeoutError:
            return Outcome(None, f"timed out after {self._timeout_seconds} s", took(), started_at)
        except httpx.HTTPError as error:
            text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            return Outcome(None, text[:ERROR_TEXT_LENGTH_MAX], took(), started_at)
        error_text = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        return Outcome(status_code, error_text, took(), started_at)

    async def _post(
        self, client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
    ) -> int:
        """POST to the checked addresses in turn (the next one only when one cannot be
        connected to); the status code. The response body is not read."""
        last_error: httpx.HTTPError | None = None
        for address in target.addresses:
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request(
                "POST",
                pinned_url(target, address),
                content=body,
                headers={**headers, "Host": host_header(target)},
                extensions=extensions,
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as error:
                last_error = error
                continue
            await response.aclose()
            return response.status_code
        if last_error is None:
            raise httpx.ConnectError("no address to connect to")
        raise last_error

    async def _drop(self, due: store.Due, reason: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await store.update_delivery(
                connection,
                due.delivery_id,
                {
                    "status": DeliveryStatus.FAILED.value,
                    "next_attempt_at": None,
                    "last_error": reason,
                },
            )

        await self._database.run_in_transaction(work)

    async def _record(self, due: store.Due, outcome: Outcome) -> None:
        attempts = due.attempts + 1
        given_up = not outcome.succeeded and attempts >= self._attempts_max
        now = utc_now()

        async def work(connection: AsyncConnection) -> int:
            values: dict[str, object] = {
                "attempts": attempts,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
            }
            if outcome.succeeded:
                values |= {
                    "status": DeliveryStatus.SUCCEEDED.value,
                    "delivered_at": now,
                    "next_attempt_at": None,
                }
            elif given_up:
                values |= {"status": DeliveryStatus.FAILED.value, "next_attempt_at": None}
            else:
                retry_at = now + timedelta(seconds=self.backoff_seconds(attempts))
                values |= {"next_attempt_at": retry_at}
            if not await store.update_delivery(connection, due.delivery_id, values):
                return 0  # deleted with its webhook meanwhile: nothing to record
            await store.add_attempt(
                connection,
                {
                    "attempt_id": uuid4(),
                    "delivery_id": due.delivery_id,
                    "attempt": attempts,
                    "started_at": outcome.started_at,
                    "duration_ms": outcome.duration_ms,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "succeeded": outcome.succeeded,
                },
            )
            if outcome.succeeded:
                await store.reset_failures(connection, due.webhook_id)
                return 0
            if given_up and await store.count_failure(connection, due.webhook_id) >= (
                self._disable_after
            ):
                return await self._disable(connection, due, now)
            return 0

        notified = await self._database.run_in_transaction(work)
        result = (
            "succeeded"
            if outcome.succeeded
            else "failed"
            if given_up
            else "refused"
            if outcome.refused
            else "retrying"
        )
        seconds = None
        if outcome.succeeded:
            committed = _event_time(due.payload)
            seconds = (now - committed).total_seconds() if committed is not None else None
        self._observer.webhook_delivery(result, seconds)
        log.info(
            "webhook_attempt",
            webhook_id=str(due.webhook_id),
            delivery_id=str(due.delivery_id),
            event_id=str(due.event_id),
            attempt=attempts,
            result=result,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
        if notified:
            self._observer.webhook_disabled()
            for _ in range(notified):
                self._observer.notification_published(EventType.WEBHOOK_DISABLED.value)
            log.warning("webhook_disabled", webhook_id=str(due.webhook_id))
            self.wake()  # the owner's other webhooks have a delivery waiting

    async def _disable(self, connection: AsyncConnection, due: store.Due, now: datetime) -> int:
        """Disable the webhook and tell its owner: a notification, and a delivery on each of
        their other active webhooks subscribed to ``webhook.disabled``; the notifications
        written (0 when it was not active any more)."""
        reason = (
            f"{self._disable_after} deliveries in a row failed after "
            f"{self._attempts_max} attempts each"
        )
        if not await store.disable_webhook(connection, due.webhook_id, at=now, reason=reason):
            return 0
        role = (
            await connection.execute(select(users.c.role).where(users.c.user_id == due.owner_id))
        ).scalar_one()
        event = Event(
            event_id=uuid4(),
            event_type=EventType.WEBHOOK_DISABLED.value,
            created_at=now,
            data={
                "webhook_id": str(due.webhook_id),
                "url": due.url,
                "disabled_at": now.isoformat(),
                "reason": reason,
            },
            account_id=None,
            account_owner_id=due.owner_id,
            trace_id=None,
        )
        others = await store.subscribers(connection, account_owner_id=None, owner_id=due.owner_id)
        fanout = fan_out(event, others, owner_role=Role(role), now=now)
        await store.add_outbox_rows(connection, fanout.outbox_rows)
        await store.add_deliveries(connection, fanout.delivery_rows)
        return len(fanout.notifications)


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Sleep ``seconds``, less when ``stop`` (or ``wake``) is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
