"""Server reflection in both versions, without a token: ``grpc.reflection.v1`` (what current
grpcurl, grpcui and Postman ask first) and ``grpc.reflection.v1alpha`` (older tools), each
listing every service and describing them well enough to build a client from."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.grpc.conftest import GrpcBank

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
EVERY_SERVICE = {
    "banking.v1.AccountService",
    "banking.v1.HoldService",
    "banking.v1.TransactionService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def _pool(serialized_files: Iterable[bytes]) -> descriptor_pool.DescriptorPool:
    """A fresh pool of the files a reflection answer carried (dependencies first)."""
    files = [descriptor_pb2.FileDescriptorProto.FromString(data) for data in serialized_files]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while files:
        ready = [f for f in files if set(f.dependency) <= added]
        assert ready, f"unresolvable dependencies: {[f.name for f in files]}"
        for file in ready:
            pool.Add(file)
            added.add(file.name)
            files.remove(file)
    return pool


async def test_v1_reflection_lists_and_describes_every_service(grpc_bank: GrpcBank) -> None:
    # The raw v1 stub. v1's messages are v1alpha's, field for field, under a new package name,
    # so the v1alpha classes encode them; the second half below uses the v1 types themselves.
    v1 = grpc_bank.channel().stream_stream(
        V1_METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="banking.v1.TransactionService"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]

    listed, banking, reflection = [response async for response in v1(iter(requests))]

    assert {s.name for s in listed.list_services_response.service} == EVERY_SERVICE
    service = _pool(banking.file_descriptor_response.file_descriptor_proto).FindServiceByName(
        "banking.v1.TransactionService"
    )
    assert set(service.methods_by_name) == {
        "DebitAccount",
        "CreditAccount",
        "TransferBetweenAccounts",
        "GetTransaction",
        "BatchMovements",
        "SearchTransactions",
        "ReverseTransaction",
    }
    assert service.methods_by_name["DebitAccount"].input_type.fields_by_name["amount"].type == (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )

    # A client built from the v1 descriptor the server describes itself with, as grpcurl does.
    v1_pool = _pool(reflection.file_descriptor_response.file_descriptor_proto)
    method = v1_pool.FindServiceByName("grpc.reflection.v1.ServerReflection").methods_by_name[
        "ServerReflectionInfo"
    ]
    assert method.client_streaming and method.server_streaming
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    typed = grpc_bank.channel().stream_stream(
        V1_METHOD,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    answers = [answer async for answer in typed(iter([request_type(list_services="")]))]
    assert {s.name for s in answers[0].list_services_response.service} == EVERY_SERVICE


async def test_v1alpha_reflection_serves_grpcio_reflections_descriptor_database(
    grpc_bank: GrpcBank,
) -> None:
    def describe() -> tuple[set[str], set[str], list[str]]:
        with grpc.insecure_channel(grpc_bank.target) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            pool = descriptor_pool.DescriptorPool(database)
            accounts = pool.FindServiceByName("banking.v1.AccountService")
            debit = pool.FindMessageTypeByName("banking.v1.DebitRequest")
            return services, set(accounts.methods_by_name), [f.name for f in debit.fields]

    services, account_methods, debit_fields = await asyncio.to_thread(describe)

    assert services == EVERY_SERVICE
    assert {"CreateAccount", "GetBalance", "WatchBalance"} <= account_methods
    assert {"account_id", "amount", "currency", "reference_id"} <= set(debit_fields)
