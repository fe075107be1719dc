"""One Arrow IPC record batch of one row, written and read without its schema.

An event is one row. Arrow's stream format would send the schema in every message (that was
schema v1: 1,744 bytes and ~70 µs for a transaction event); here a message is the encapsulated
IPC ``RecordBatch`` message alone, exactly what ``pyarrow.RecordBatch.serialize()`` writes and
``pyarrow.ipc.read_record_batch(buffer, schema)`` reads, and the schema is referenced by the
event's ``ce_dataschema`` header (published on ``banking.schemas``, see ``events.registry``).

Building one-row batches through pyarrow's Python objects costs ~40 µs per event in call
overhead, so this module writes and reads the message's bytes itself, for the flat column
types the event schemas use (``utf8``, ``decimal128``, ``timestamp[us]`` and ``int64``). The
layout follows the Arrow columnar format (``Message.fbs``, ``Schema.fbs``, metadata version
V5, little-endian, buffers 8-byte aligned); ``tests/events/test_arrow_ipc.py`` proves that
pyarrow reads every message written here and that this reader reads pyarrow's.

Reading checks every offset against the message's bounds and raises ``ArrowIpcError`` on
anything else; a valid message this reader does not handle (a compressed body, written by
another producer) raises ``UnsupportedLayout`` so that the caller can use pyarrow instead.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Rounded
from typing import Any, Final

import pyarrow as pa

_CONTINUATION: Final = -1  # 0xFFFFFFFF as int32: the encapsulated message marker
_METADATA_V4: Final = 3
_METADATA_V5: Final = 4
_HEADER_RECORD_BATCH: Final = 3
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_PADS: Final = tuple(bytes(size) for size in range(8))  # padding to the next 8 bytes
# Amounts are scaled without any rounding: an inexact step raises instead.
_EXACT: Final = Context(prec=60, traps=[Inexact, Rounded, InvalidOperation])

_u16 = struct.Struct("<H").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i64 = struct.Struct("<q").unpack_from
_two_i32 = struct.Struct("<ii")
_one_i64 = struct.Struct("<q")


class ArrowIpcError(ValueError):
    """Bytes that are not a one-row record batch of the expected schema."""


class UnsupportedLayout(ArrowIpcError):
    """A valid record batch this reader does not handle (a compressed body): use pyarrow."""


# The column kinds (plain ints: they are compared for every value). Buffers of each kind:
_UTF8: Final = 0  # validity, offsets, data
_DECIMAL: Final = 1  # validity, 16-byte little-endian two's complement values
_TIMESTAMP: Final = 2  # validity, int64 microseconds since the epoch
_INT64: Final = 3  # validity, int64 values


def _kind_of(column: pa.Field) -> tuple[int, int]:
    """The column's kind and its scale (decimals) or 0."""
    data_type = column.type
    if pa.types.is_string(data_type):
        return _UTF8, 0
    if pa.types.is_decimal128(data_type):
        return _DECIMAL, data_type.scale
    if pa.types.is_timestamp(data_type) and data_type.unit == "us":
        return _TIMESTAMP, 0
    if pa.types.is_int64(data_type):
        return _INT64, 0
    raise TypeError(f"column {column.name!r}: {data_type} is not supported by the event codec")


class RecordBatchCodec:
    """Write and read one-row record batches of one schema (no nested or dictionary types)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        # Per column: name, kind, scale, the decimal's bound (10^precision), and where its
        # node and its values buffer are in the flat lists of numbers the metadata vectors
        # unpack to (two per node, two per buffer; the values buffer follows the validity).
        plan = []
        buffer = 0
        for index, column in enumerate(schema):
            kind, scale = _kind_of(column)
            limit = 10**column.type.precision if kind == _DECIMAL else 0
            plan.append((column.name, kind, scale, limit, 2 * index, 2 * (buffer + 1)))
            buffer += 3 if kind == _UTF8 else 2
        self._plan = tuple(plan)
        nodes, buffers = len(plan), buffer
        self._node_count, self._buffer_count = nodes, buffers
        self._nodes_template = [1, 0] * nodes
        # The flatbuffer, front to back (offsets are relative to its first byte):
        #   0  root offset -> 16 (the Message table)
        #   4  Message vtable: 6 uint16 (vtable size, table size, field offsets: version,
        #      header type, header, body length)
        #  16  Message table: vtable offset, header offset (-> 48), bodyLength int64,
        #      version int16 (V5), header type uint8 (RecordBatch), 1 pad byte
        #  36  RecordBatch vtable: 5 uint16 (sizes, fields: length, nodes, buffers), 2 pad bytes
        #  48  RecordBatch table: vtable offset, nodes offset (-> 68), length int64 (1 row),
        #      buffers offset
        #  68  nodes vector: count, then FieldNode {length, null_count} structs at 72
        #   .. 4 pad bytes, buffers vector: count, then Buffer {offset, length} structs
        #      (8-aligned), then padding so the body starts 8-aligned after the 8-byte prefix
        buffers_vector = 72 + 16 * nodes + 4
        self._buffers_vector = buffers_vector
        flatbuffer_size = buffers_vector + 4 + 16 * buffers
        padding = -(flatbuffer_size + 8) % 8
        self._prefix = struct.pack("<ii", _CONTINUATION, flatbuffer_size + padding)
        self._message_head = struct.pack(
            "<I6HiI", 16, 12, 20, 16, 18, 4, 8, 16 - 4, 48 - 20
        )  # up to the body length
        self._batch_head = struct.pack(
            "<hBx5H2xiIqII",
            _METADATA_V5,
            _HEADER_RECORD_BATCH,
            10,
            20,
            8,
            4,
            16,
            48 - 36,
            68 - 52,
            1,
            buffers_vector - 64,
            nodes,
        )
        self._buffers_head = struct.pack("<iI", 0, buffers)
        self._tail = bytes(padding)
        self._pack_nodes = struct.Struct(f"<{2 * nodes}q").pack
        self._pack_buffers = struct.Struct(f"<{2 * buffers}q").pack
        self._unpack_nodes = struct.Struct(f"<{2 * nodes}q").unpack_from
        self._unpack_buffers = struct.Struct(f"<{2 * buffers}q").unpack_from

    # --- writing ---------------------------------------------------------------------------

    def encode(self, row: Mapping[str, Any]) -> bytes:
        """The IPC message of ``row``: by column, ``str``; ``Decimal`` (or its text); an aware
        ``datetime`` (or its ISO 8601 text); ``int``; or ``None``. Raises ``ArrowIpcError`` for
        a value that does not fit its column exactly (an amount is never rounded)."""
        body = bytearray()
        buffers: list[int] = []  # (offset, length) of every buffer, flat
        nodes = self._nodes_template.copy()  # (length 1, null count 0) per column, flat
        pack_offsets, pack_int64, pads = _two_i32.pack, _one_i64.pack, _PADS
        name = ""
        value: Any = None
        try:
            for name, kind, scale, limit, node, _ in self._plan:
                value = row[name]
                position = len(body)
                if value is None:
                    # validity bitmap (1 byte, bit 0 clear, padded to 8), then zeroed values
                    width = 16 if kind == _DECIMAL else 8
                    nodes[node + 1] = 1
                    buffers += (position, 1, position + 8, width)
                    if kind == _UTF8:
                        buffers += (position + 16, 0)
                    body += bytes(8 + width)
                elif kind == _UTF8:
                    data = value.encode()
                    size = len(data)
                    buffers += (position, 0, position, 8, position + 8, size)
                    body += pack_offsets(0, size)
                    body += data
                    body += pads[-size % 8]
                elif kind == _DECIMAL:
                    if type(value) is str:  # decimal text, as the outbox stores amounts
                        value = Decimal(value)
                    scaled = value.scaleb(scale, _EXACT)
                    unscaled = int(scaled)
                    if unscaled != scaled or not -limit < unscaled < limit:
                        raise ArrowIpcError("more decimal places or digits than the column's")
                    buffers += (position, 0, position, 16)
                    body += unscaled.to_bytes(16, "little", signed=True)
                else:
                    if kind == _TIMESTAMP:
                        if type(value) is str:  # ISO 8601 text, as the outbox stores times
                            value = datetime.fromisoformat(value)
                        value = (value - _EPOCH) // _MICROSECOND
                    buffers += (position, 0, position, 8)
                    body += pack_int64(value)
        except KeyError:
            raise
        except (
            ArrowIpcError,
            AttributeError,
            TypeError,
            ValueError,
            OverflowError,
            DecimalException,
            struct.error,
        ) as error:
            raise ArrowIpcError(f"column {name!r}: {value!r} does not fit: {error}") from error
        return b"".join(
            (
                self._prefix,
                self._message_head,
                pack_int64(len(body)),
                self._batch_head,
                self._pack_nodes(*nodes),
                self._buffers_head,
                self._pack_buffers(*buffers),
                self._tail,
                body,
            )
        )

    # --- reading ---------------------------------------------------------------------------

    def decode(self, data: bytes) -> dict[str, Any]:
        """The row of an IPC record batch message of this schema (one row)."""
        try:
            return self._decode(data)
        except ArrowIpcError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError) as error:
            raise ArrowIpcError(f"not a record batch of this schema: {error}") from error

    def _decode(self, data: bytes) -> dict[str, Any]:
        continuation, metadata_size = _two_i32.unpack_from(data, 0)
        if continuation != _CONTINUATION or metadata_size <= 0:
            raise ArrowIpcError("not an encapsulated Arrow IPC message")
        body_start = 8 + metadata_size
        if body_start > len(data):
            raise ArrowIpcError("truncated metadata")
        if (
            data.startswith(self._prefix)
            and data.startswith(self._message_head, 8)
            and data.startswith(self._batch_head, 40)
            and data.startswith(self._buffers_head, self._buffers_vector + 4)
        ):
            # The layout this codec writes (every fixed byte matches): the offsets are known.
            body_size = _i64(data, 32)[0]
            nodes_at, buffers_at = 8 + 72, 8 + self._buffers_vector + 4
        else:
            body_size, nodes_at, buffers_at = self._locate(data, metadata_size)
        if body_size < 0 or body_start + body_size > len(data):
            raise ArrowIpcError("truncated body")
        nodes = self._unpack_nodes(data, nodes_at)
        buffers = self._unpack_buffers(data, buffers_at)
        unpack_offsets, unpack_int64 = _two_i32.unpack_from, _i64
        epoch, microsecond, exact = _EPOCH, _MICROSECOND, _EXACT
        row: dict[str, Any] = {}
        for name, kind, scale, limit, node, values in self._plan:
            if nodes[node] != 1:
                raise ArrowIpcError(f"column {name!r} is not one value")
            null_count = nodes[node + 1]
            if null_count:
                if null_count != 1:
                    raise ArrowIpcError(f"column {name!r} is not one value")
                row[name] = None
                continue
            offset = buffers[values]  # the values buffer (after the validity bitmap)
            if kind == _UTF8:
                data_offset, data_size = buffers[values + 2], buffers[values + 3]
                if (
                    offset < 0
                    or offset + 8 > body_size
                    or data_offset < 0
                    or data_offset + data_size > body_size
                ):
                    raise ArrowIpcError(f"column {name!r}: a buffer lies outside the body")
                start, end = unpack_offsets(data, body_start + offset)
                if not 0 <= start <= end <= data_size:
                    raise ArrowIpcError(f"column {name!r}: bad string offsets")
                at = body_start + data_offset
                row[name] = data[at + start : at + end].decode()
                continue
            if offset < 0 or offset + (16 if kind == _DECIMAL else 8) > body_size:
                raise ArrowIpcError(f"column {name!r}: a buffer lies outside the body")
            at = body_start + offset
            if kind == _DECIMAL:
                unscaled = int.from_bytes(data[at : at + 16], "little", signed=True)
                if not -limit < unscaled < limit:
                    raise ArrowIpcError(f"column {name!r}: beyond the decimal's precision")
                row[name] = Decimal(unscaled).scaleb(-scale, exact)
            elif kind == _TIMESTAMP:
                row[name] = epoch + unpack_int64(data, at)[0] * microsecond
            else:
                row[name] = unpack_int64(data, at)[0]
        return row

    def _locate(self, data: bytes, metadata_size: int) -> tuple[int, int, int]:
        """Body size and where the nodes and buffers start in ``data``, read from the
        flatbuffer (a message written by another Arrow implementation)."""
        metadata = memoryview(data)[8 : 8 + metadata_size]
        message = _u32(metadata, 0)[0]
        version, header_type, header, body_size = _fields(metadata, message, _MESSAGE_FIELDS)
        if version not in (_METADATA_V4, _METADATA_V5):
            raise ArrowIpcError(f"unsupported metadata version {version}")
        if header_type != _HEADER_RECORD_BATCH or not header:
            raise ArrowIpcError("not a record batch message")
        length, nodes_at, buffers_at, compression = _fields(metadata, header, _BATCH_FIELDS)
        if length != 1:
            raise ArrowIpcError("an event is exactly one row")
        if compression:
            raise UnsupportedLayout("compressed body")
        if not nodes_at or not buffers_at:
            raise ArrowIpcError("no field nodes or buffers")
        if (_u32(metadata, nodes_at)[0], _u32(metadata, buffers_at)[0]) != (
            self._node_count,
            self._buffer_count,
        ):
            raise ArrowIpcError("the columns are not the schema's")
        vectors_end = max(
            nodes_at + 4 + 16 * self._node_count, buffers_at + 4 + 16 * self._buffer_count
        )
        if vectors_end > metadata_size:
            raise ArrowIpcError("truncated metadata")
        return body_size, 8 + nodes_at + 4, 8 + buffers_at + 4


# --- flatbuffers, read with bounds checks ----------------------------------------------------

# (field index, kind) of the fields read: "s" a scalar (struct format), "o" an offset to a
# table or vector (resolved to its position), in the order ``_fields`` returns them.
_MESSAGE_FIELDS: Final = ((0, "<h"), (1, "<B"), (2, "o"), (3, "<q"))  # version ... bodyLength
_BATCH_FIELDS: Final = ((0, "<q"), (1, "o"), (2, "o"), (3, "o"))  # length, nodes, buffers, comp.


def _fields(buffer: memoryview, table: int, wanted: tuple[tuple[int, str], ...]) -> list[int]:
    """Values of some fields of the table at ``table``: scalars (0 when absent) and the
    positions of the objects offsets refer to (0 when absent)."""
    if table < 0:
        raise ArrowIpcError("bad table offset")
    vtable = table - _i32(buffer, table)[0]
    if vtable < 0:
        raise ArrowIpcError("bad vtable offset")
    vtable_size = _u16(buffer, vtable)[0]
    values = []
    for index, fmt in wanted:
        entry = 4 + 2 * index
        offset = _u16(buffer, vtable + entry)[0] if entry + 2 <= vtable_size else 0
        if not offset:
            values.append(0)
        elif fmt == "o":
            at = table + offset
            values.append(at + _u32(buffer, at)[0])
        else:
            values.append(int(struct.unpack_from(fmt, buffer, table + offset)[0]))
    return values
