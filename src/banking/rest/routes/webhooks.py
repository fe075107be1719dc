"""``/api/v1/webhooks``: subscribe a URL to events, list, delete, read its deliveries.

The signing secret is in the creation answer only (``WebhookCreated``); every other answer
is a ``WebhookRead``, which has no field for it. docs/webhooks.md says what a receiver gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self, get_args
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from banking.notifications.model import (
    EVENT_TYPES,
    Attempt,
    CreatedWebhook,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookStatus,
)
from banking.notifications.ssrf import URL_LENGTH_MAX
from banking.rest.dependencies import ContainerDep, CurrentActor
from banking.rest.errors import ErrorCode
from banking.rest.openapi import header, link, responses
from banking.rest.routes import Route
from banking.rest.schemas import EXAMPLE_CUSTOMER_ID, EXAMPLE_TIME, CursorQuery

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], route_class=Route)
E = ErrorCode
_READ_ERRORS = (E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.NOT_FOUND)

EXAMPLE_WEBHOOK_ID = "5c3e9a7b-2f1d-4c8e-b6a0-9d8e7f6a5b4c"
EXAMPLE_DELIVERY_ID = "8d7c6b5a-4e3f-4a2b-9c1d-0e9f8a7b6c5d"
EXAMPLE_EVENT_ID = "2a1b0c9d-8e7f-4a6b-8c5d-4e3f2a1b0c9d"
_WEBHOOK_EXAMPLE: dict[str, Any] = {
    "webhook_id": EXAMPLE_WEBHOOK_ID,
    "owner_id": EXAMPLE_CUSTOMER_ID,
    "url": "https://hooks.example.com/banking",
    "event_types": ["transaction.completed", "transaction.failed"],
    "status": "active",
    "consecutive_failures": 0,
    "created_at": EXAMPLE_TIME,
    "disabled_at": None,
    "disabled_reason": None,
}
EventTypeName = Literal[
    "transaction.completed",
    "transaction.failed",
    "transaction.held",
    "fraud.alert",
    "webhook.disabled",
]
if set(get_args(EventTypeName)) != set(EVENT_TYPES):  # an explicit check: python -O keeps it
    raise RuntimeError("the REST event types must be the notification service's")


class WebhookCreateBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/banking",
                    "event_types": ["transaction.completed", "transaction.failed"],
                }
            ]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=URL_LENGTH_MAX,
        description="An http(s) URL without user information whose host resolves only to "
        "public addresses (private, loopback, link-local and other non-global addresses are "
        "refused unless the operator allows their network).",
        json_schema_extra={"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^@/?#\\s]+"},
    )
    event_types: list[EventTypeName] = Field(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="The events to deliver (at least one; repeats are ignored).",
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_WEBHOOK_EXAMPLE]})

    webhook_id: UUID
    owner_id: UUID
    url: str
    event_types: list[EventTypeName]
    status: WebhookStatus
    consecutive_failures: int = Field(
        ge=0, description="Deliveries given up in a row (the webhook is disabled at a bound)."
    )
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None

    @classmethod
    def of(cls, webhook: Webhook) -> Self:
        return cls.model_validate(
            {name: getattr(webhook, name) for name in cls.model_fields if name != "secret"}
        )


class WebhookCreated(WebhookRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_WEBHOOK_EXAMPLE, "secret": "whsec_" + "x" * 43}],
        }
    )

    secret: str = Field(
        description="The HMAC-SHA256 signing secret of the deliveries. Shown only in this "
        "answer: store it now (it is never shown again)."
    )

    @classmethod
    def of_created(cls, created: CreatedWebhook) -> Self:
        return cls.model_validate(
            {**WebhookRead.of(created.webhook).model_dump(), "secret": created.secret}
        )


class WebhookList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"webhooks": [_WEBHOOK_EXAMPLE]}]})

    webhooks: list[WebhookRead]


class AttemptRead(BaseModel):
    attempt: int = Field(ge=1)
    started_at: datetime
    duration_ms: int = Field(ge=0)
    status_code: int | None = Field(description="The receiver's status; null if no answer.")
    error: str | None
    succeeded: bool

    @classmethod
    def of(cls, attempt: Attempt) -> Self:
        return cls.model_validate({name: getattr(attempt, name) for name in cls.model_fields})


class DeliveryRead(BaseModel):
    delivery_id: UUID
    webhook_id: UUID
    event_id: UUID = Field(description="The `Banking-Event-Id` of every attempt: dedupe by it.")
    event_type: EventTypeName
    status: DeliveryStatus
    attempts: int = Field(ge=0)
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_history: list[AttemptRead]

    @classmethod
    def of(cls, delivery: Delivery) -> Self:
        fields = {name: getattr(delivery, name) for name in cls.model_fields}
        fields["attempt_history"] = [AttemptRead.of(a) for a in delivery.attempt_history]
        return cls.model_validate(fields)


class DeliveryPageRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deliveries": [
                        {
                            "delivery_id": EXAMPLE_DELIVERY_ID,
                            "webhook_id": EXAMPLE_WEBHOOK_ID,
                            "event_id": EXAMPLE_EVENT_ID,
                            "event_type": "transaction.completed",
                            "status": "succeeded",
                            "attempts": 2,
                            "next_attempt_at": None,
                            "last_status_code": 200,
                            "last_error": None,
                            "created_at": EXAMPLE_TIME,
                            "delivered_at": EXAMPLE_TIME,
                            "attempt_history": [
                                {
                                    "attempt": 1,
                                    "started_at": EXAMPLE_TIME,
                                    "duration_ms": 12,
                                    "status_code": 500,
                                    "error": "HTTP 500",
                                    "succeeded": False,
                                },
                                {
                                    "attempt": 2,
                                    "started_at": EXAMPLE_TIME,
                                    "duration_ms": 9,
                                    "status_code": 200,
                                    "error": None,
                                    "succeeded": True,
                                },
                            ],
                        }
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    deliveries: list[DeliveryRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


_CREATED_LINKS = {
    "getWebhook": link("getWebhook", "The webhook just created.", webhook_id="webhook_id"),
    "listWebhookDeliveries": link(
        "listWebhookDeliveries", "Its deliveries.", webhook_id="webhook_id"
    ),
    "deleteWebhook": link("deleteWebhook", "Unsubscribe.", webhook_id="webhook_id"),
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=responses(
        E.UNAUTHENTICATED,
        E.VALIDATION_ERROR,
        success={
            201: {
                "headers": {"Location": header("Location", required=True)},
                "links": _CREATED_LINKS,
            }
        },
    ),
)
async def create_webhook(
    body: WebhookCreateBody, actor: CurrentActor, container: ContainerDep, response: Response
) -> WebhookCreated:
    """Subscribe a URL to events; the answer holds the signing secret, shown this once."""
    created = await container.webhooks.create(
        actor, url=body.url, event_types=list(body.event_types)
    )
    response.headers["Location"] = f"/api/v1/webhooks/{created.webhook.webhook_id}"
    return WebhookCreated.of_created(created)


@router.get("", response_model=WebhookList, responses=responses(E.UNAUTHENTICATED))
async def list_webhooks(actor: CurrentActor, container: ContainerDep) -> WebhookList:
    """The caller's webhooks (every webhook for auditors and admins)."""
    webhooks = await container.webhooks.list(actor)
    return WebhookList(webhooks=[WebhookRead.of(webhook) for webhook in webhooks])


@router.get("/{webhook_id}", response_model=WebhookRead, responses=responses(*_READ_ERRORS))
async def get_webhook(
    webhook_id: UUID, actor: CurrentActor, container: ContainerDep
) -> WebhookRead:
    """One webhook (without its secret)."""
    return WebhookRead.of(await container.webhooks.get(actor, webhook_id))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(*_READ_ERRORS),
)
async def delete_webhook(
    webhook_id: UUID, actor: CurrentActor, container: ContainerDep
) -> Response:
    """Unsubscribe: the webhook and its delivery history are removed; nothing more is sent."""
    await container.webhooks.delete(actor, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPageRead,
    responses=responses(*_READ_ERRORS),
)
async def list_webhook_deliveries(
    webhook_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    cursor: CursorQuery = None,
    page_size: Annotated[
        int | None, Query(ge=1, description="Deliveries per page (at most PAGE_SIZE_MAX).")
    ] = None,
) -> DeliveryPageRead:
    """Deliveries, newest first, each with every attempt (time, status code, error, duration)."""
    page = await container.webhooks.deliveries(
        actor, webhook_id, cursor=cursor, page_size=page_size
    )
    return DeliveryPageRead(
        deliveries=[DeliveryRead.of(delivery) for delivery in page.deliveries],
        next_cursor=page.next_cursor,
    )
