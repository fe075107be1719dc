"""The gRPC ``HoldService``: a thin adapter from ``banking.v1`` hold messages to the core's
``Holds`` (``banking.ledger.holds``) and back, like ``servicers``; errors become status codes
in ``interceptors.ErrorInterceptor``."""

from __future__ import annotations

from typing import Any

import grpc

from banking.container import Container
from banking.domain.errors import ValidationFailed
from banking.domain.money import parse_amount
from banking.domain.records import CaptureRequest, HoldRequest, HoldResult, HoldStatus
from banking.grpc.gen import holds_pb2, holds_pb2_grpc
from banking.grpc.interceptors import REPLAYED_KEY, current_actor
from banking.grpc.mapping import capture_message, hold_message
from banking.grpc.servicers import _time, _trace_id, _uuid
from banking.observability import context as log_context

Context = grpc.aio.ServicerContext[Any, Any]


class HoldServicer(holds_pb2_grpc.HoldServiceServicer):
    def __init__(self, container: Container) -> None:
        self._holds = container.holds

    async def AuthorizeHold(
        self, request: holds_pb2.AuthorizeHoldRequest, context: Context
    ) -> holds_pb2.Hold:
        destination = request.destination_account_id
        asked = HoldRequest(
            account_id=_uuid(request.account_id, "account_id"),
            amount=parse_amount(request.amount),
            currency=request.currency,
            description=request.description or None,
            reference_id=request.reference_id or None,
            expires_at=_time(request.expires_at, "expires_at"),
            destination_account_id=(
                _uuid(destination, "destination_account_id") if destination else None
            ),
        )
        result = await self._holds.authorize(current_actor(), asked, trace_id=_trace_id())
        return hold_message(_answered(result, context).hold)

    async def GetHold(self, request: holds_pb2.GetHoldRequest, context: Context) -> holds_pb2.Hold:
        hold_id = _uuid(request.hold_id, "hold_id")
        return hold_message(await self._holds.get(current_actor(), hold_id))

    async def ListHolds(
        self, request: holds_pb2.ListHoldsRequest, context: Context
    ) -> holds_pb2.ListHoldsResponse:
        page = await self._holds.page(
            current_actor(),
            account_id=_uuid(request.account_id, "account_id") if request.account_id else None,
            status=_status(request.status),
            cursor=request.cursor or None,
            page_size=request.page_size or None,
        )
        return holds_pb2.ListHoldsResponse(
            holds=[hold_message(hold) for hold in page.holds], next_cursor=page.next_cursor or ""
        )

    async def CaptureHold(
        self, request: holds_pb2.CaptureHoldRequest, context: Context
    ) -> holds_pb2.CaptureHoldResponse:
        hold_id = _uuid(request.hold_id, "hold_id")
        asked = CaptureRequest(
            amount=parse_amount(request.amount) if request.amount else None,
            final=request.final,
            reference_id=request.reference_id or None,
        )
        result = await self._holds.capture(current_actor(), hold_id, asked, trace_id=_trace_id())
        return capture_message(_answered(result, context))

    async def VoidHold(
        self, request: holds_pb2.VoidHoldRequest, context: Context
    ) -> holds_pb2.Hold:
        hold_id = _uuid(request.hold_id, "hold_id")
        result = await self._holds.void(current_actor(), hold_id, trace_id=_trace_id())
        return hold_message(_answered(result, context).hold)


def _answered(result: HoldResult, context: Context) -> HoldResult:
    log_context.bind(hold_id=str(result.hold.hold_id))
    if result.replayed:
        context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
    return result


def _status(text: str) -> HoldStatus | None:
    if not text:
        return None
    try:
        return HoldStatus(text)
    except ValueError as error:
        allowed = ", ".join(status.value for status in HoldStatus)
        raise ValidationFailed(f"status must be one of {allowed}", field="status") from error
