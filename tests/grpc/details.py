"""Reading a failed call's rich error details the way any gRPC client does: ``grpc_status``
(``rpc_status.from_call``) and the ``google.rpc.error_details_pb2`` messages, nothing of ours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_M = TypeVar("_M", bound=Message)

KINDS: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.RequestInfo,
)


@dataclass
class RichError:
    """A failed call's ``google.rpc.Status`` and the details packed in it."""

    status: status_pb2.Status
    info: error_details_pb2.ErrorInfo
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None
    request: error_details_pb2.RequestInfo | None

    @property
    def violations(self) -> list[tuple[str, str]]:
        """``(field, description)`` of each BadRequest field violation."""
        if self.bad_request is None:
            return []
        return [(v.field, v.description) for v in self.bad_request.field_violations]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """The details of ``error`` (an aio call's exception): exactly one ErrorInfo, at most one of
    each other kind, nothing of another type. ``from_call`` itself checks that the Status's code
    and message are the call's."""
    status = rpc_status.from_call(error)
    assert status is not None, "the call carried no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0]
    unknown = [p.type_url for p in status.details if not any(p.Is(k.DESCRIPTOR) for k in KINDS)]
    assert not unknown, f"unexpected detail types {unknown}"
    infos = _unpacked(status, error_details_pb2.ErrorInfo)
    assert len(infos) == 1, "every failed call carries one ErrorInfo"
    return RichError(
        status,
        infos[0],
        _at_most_one(status, error_details_pb2.BadRequest),
        _at_most_one(status, error_details_pb2.RetryInfo),
        _at_most_one(status, error_details_pb2.RequestInfo),
    )


def _unpacked(status: status_pb2.Status, kind: type[_M]) -> list[_M]:
    found = []
    for packed in status.details:
        message = kind()
        if packed.Unpack(message):
            found.append(message)
    return found


def _at_most_one(status: status_pb2.Status, kind: type[_M]) -> _M | None:
    found = _unpacked(status, kind)
    assert len(found) <= 1, f"{len(found)} {kind.__name__} details"
    return found[0] if found else None
