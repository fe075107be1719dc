"""The Parquet dataset on a ``pyarrow.fs`` filesystem: where each file goes, what its name
says, how it is written so that no reader ever sees half of it.

Layout (Hive-style)::

    <location>/event_type=<type>/date=<YYYY-MM-DD>/part-<topic>-<partition>-<first>-<last>.parquet

``first`` and ``last`` are the Kafka offsets of the file's first and last row (of that event
type and day) on ``topic``/``partition``; the same offsets are in the file's Parquet metadata
(``banking.analytics.*`` keys). Every file of one (event type, day, topic, partition) holds all
the messages of that key between its first and last offset, and they are written in offset
order: so the highest ``last`` per key is exactly what has been written for that key.

A local file is written under a hidden temporary name (``.part-....parquet.tmp``, which no
``*.parquet`` glob matches), flushed to disk (fsync) and renamed; an object store gets the
file in one upload (the object appears only when the upload completes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

METADATA_PREFIX: Final = "banking.analytics."
TEMPORARY_SUFFIX: Final = ".tmp"
_FILE_NAME: Final = re.compile(
    r"^part-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$"
)
_EVENT_TYPE_DIR: Final = re.compile(r"^event_type=(?P<value>[a-z][a-z0-9_.]*)$")
_DATE_DIR: Final = re.compile(r"^date=(?P<value>\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class FileKey:
    """What one file's rows share: event type, day, and the Kafka partition they came from."""

    event_type: str
    day: date
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class DataFile:
    key: FileKey
    first_offset: int
    last_offset: int
    path: str
    size_bytes: int


def relative_path(key: FileKey, first_offset: int, last_offset: int) -> str:
    """Where a file of ``key`` with those offsets lives, relative to the dataset's root."""
    name = f"part-{key.topic}-{key.partition}-{first_offset}-{last_offset}.parquet"
    return f"event_type={key.event_type}/date={key.day.isoformat()}/{name}"


def parse_path(relative: str) -> tuple[FileKey, int, int] | None:
    """The key and offsets a dataset file's path names; None for anything else."""
    parts = relative.split("/")
    if len(parts) != 3:
        return None
    event_type, day, name = _EVENT_TYPE_DIR.match(parts[0]), _DATE_DIR.match(parts[1]), parts[2]
    matched = _FILE_NAME.match(name)
    if event_type is None or day is None or matched is None:
        return None
    try:
        parsed_day = date.fromisoformat(day.group("value"))
    except ValueError:
        return None
    topic, partition = matched.group("topic"), int(matched.group("partition"))
    key = FileKey(event_type.group("value"), parsed_day, topic, partition)
    return key, int(matched.group("first")), int(matched.group("last"))


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path of ``ANALYTICS_LOCATION``: a plain directory, or a URL
    ``pyarrow.fs.FileSystem.from_uri`` understands (``file://``, ``s3://bucket/path?region=...``,
    ``gs://``, ``hdfs://``)."""
    if not location:
        raise ValueError("ANALYTICS_LOCATION is not set")
    if "://" in location:
        filesystem, root = pafs.FileSystem.from_uri(location)
        return filesystem, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(location)


class ParquetDataset:
    """The dataset's files: listed, parsed from their names, and written atomically."""

    def __init__(self, location: str, *, row_group_rows: int) -> None:
        self.location = location
        self.filesystem, self.root = open_location(location)
        self.row_group_rows = row_group_rows
        self._local = isinstance(self.filesystem, pafs.LocalFileSystem)

    def files(self) -> list[DataFile]:
        """Every complete dataset file (temporary files and strangers left out)."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        found = []
        for info in self.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.root) :].lstrip("/")
            parsed = parse_path(relative)
            if parsed is not None:
                key, first, last = parsed
                found.append(DataFile(key, first, last, info.path, info.size or 0))
        return found

    def written_offsets(self) -> dict[FileKey, int]:
        """The highest offset written per file key (see the module's docstring for why that
        is exactly what is written)."""
        written: dict[FileKey, int] = {}
        for data_file in self.files():
            written[data_file.key] = max(written.get(data_file.key, -1), data_file.last_offset)
        return written

    def remove_temporary_files(self) -> int:
        """Delete what a killed writer left half-written (never visible to readers)."""
        if not self._local:
            return 0
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        removed = 0
        for info in self.filesystem.get_file_info(selector):
            name = info.base_name
            if (
                info.type == pafs.FileType.File
                and name.startswith(".")
                and name.endswith(TEMPORARY_SUFFIX)
            ):
                self.filesystem.delete_file(info.path)
                removed += 1
        return removed

    def write(self, key: FileKey, first_offset: int, last_offset: int, table: pa.Table) -> int:
        """Write one file durably; its size in bytes."""
        metadata = {
            f"{METADATA_PREFIX}topic": key.topic,
            f"{METADATA_PREFIX}partition": str(key.partition),
            f"{METADATA_PREFIX}first_offset": str(first_offset),
            f"{METADATA_PREFIX}last_offset": str(last_offset),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        buffer = pa.BufferOutputStream()
        pq.write_table(
            table,
            buffer,
            row_group_size=self.row_group_rows,
            compression="zstd",
            coerce_timestamps="us",
            allow_truncated_timestamps=False,
        )
        body = buffer.getvalue()
        final = f"{self.root}/{relative_path(key, first_offset, last_offset)}"
        directory = final.rpartition("/")[0]
        self.filesystem.create_dir(directory, recursive=True)
        if not self._local:
            with self.filesystem.open_output_stream(final) as stream:  # one upload
                stream.write(body)
            return int(body.size)
        temporary = f"{directory}/.{final.rpartition('/')[2]}{TEMPORARY_SUFFIX}"
        with open(temporary, "wb") as handle:
            handle.write(body.to_pybytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        _fsync_directory(directory)
        return int(body.size)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (a crash of the machine keeps the file's name)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
