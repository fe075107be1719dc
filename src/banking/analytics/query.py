"""`banking analytics query "SQL"`: DuckDB over the dataset, one view per dataset.

Views (``analytics.rows.DATASETS``): ``transactions`` (completed and failed legs, and
commands rejected before they had a leg), ``balances``, ``fraud_alerts``, ``held``; each has
its event's columns, the envelope columns (``event_id``, ``event_time``, ``trace_id``,
``topic``, ``partition``, ``offset``) and the partition columns ``event_type`` and ``date``.
A local dataset is read with ``read_parquet(..., hive_partitioning = true)``; one behind a URL
through a ``pyarrow.dataset`` on its ``pyarrow.fs`` filesystem. The session's time zone is
UTC. Amounts are ``DECIMAL(18,2)`` and come back as ``Decimal``; they are printed exactly.

The views are built from this module's own names (``DATASETS``) and the dataset's file paths
(quoted); the user's SQL runs as it is given, on an in-memory session that holds nothing
but these views.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from banking.analytics.dataset import ParquetDataset
from banking.analytics.rows import DATASETS, Dataset

FORMATS: Final = ("table", "csv", "json")
CELL_WIDTH_MAX: Final = 60


class QueryFailed(ValueError):
    """SQL DuckDB refused (syntax, unknown column...), with DuckDB's message."""


@dataclass(frozen=True, slots=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def connect(location: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session with the dataset's views."""
    dataset = ParquetDataset(location, row_group_rows=1)
    with_files = {data_file.key.event_type for data_file in dataset.files()}
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    for view in DATASETS:
        present = [event_type for event_type in view.event_types if event_type in with_files]
        if not present:
            _empty_view(connection, view)
        elif isinstance(dataset.filesystem, pafs.LocalFileSystem):
            _local_view(connection, dataset, view, present)
        else:
            _remote_view(connection, dataset, view, present)
    return connection


def _local_view(
    connection: duckdb.DuckDBPyConnection,
    dataset: ParquetDataset,
    view: Dataset,
    event_types: list[str],
) -> None:
    globs = ", ".join(
        _quote(f"{dataset.root}/event_type={event_type}/**/*.parquet") for event_type in event_types
    )
    connection.execute(
        f"CREATE VIEW {view.view} AS SELECT * FROM read_parquet([{globs}], "  # noqa: S608
        "hive_partitioning = true, hive_types = {'event_type': VARCHAR, 'date': DATE}, "
        "union_by_name = true)"
    )


def _remote_view(
    connection: duckdb.DuckDBPyConnection,
    dataset: ParquetDataset,
    view: Dataset,
    event_types: list[str],
) -> None:
    """An object store through pyarrow.fs (DuckDB's own S3 support would need its httpfs
    extension and its own credentials): one Arrow dataset per event type, ``date`` from
    the Hive directories."""
    selects = []
    for index, event_type in enumerate(event_types):
        files = pads.dataset(
            f"{dataset.root}/event_type={event_type}",
            filesystem=dataset.filesystem,
            format="parquet",
            schema=view.schema.append(pa.field("date", pa.string())),
            partitioning=pads.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
        )
        name = f"_{view.view}_{index}"
        connection.register(name, files)
        selects.append(
            "SELECT * REPLACE (CAST(date AS DATE) AS date), "  # noqa: S608 - our names
            f"{_quote(event_type)} AS event_type FROM {name}"
        )
    connection.execute(f"CREATE VIEW {view.view} AS {' UNION ALL BY NAME '.join(selects)}")


def _empty_view(connection: duckdb.DuckDBPyConnection, view: Dataset) -> None:
    connection.register(f"_{view.view}_empty", view.schema.empty_table())
    connection.execute(
        f"CREATE VIEW {view.view} AS SELECT *, CAST(NULL AS VARCHAR) AS event_type, "  # noqa: S608
        f"CAST(NULL AS DATE) AS date FROM _{view.view}_empty"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def run(location: str, sql: str) -> Result:
    """Run one SQL statement over the dataset; ``QueryFailed`` with DuckDB's reason."""
    connection = connect(location)
    try:
        cursor = connection.execute(sql)
        if cursor.description is None:
            return Result([], [])
        columns = [column[0] for column in cursor.description]
        return Result(columns, [tuple(row) for row in cursor.fetchall()])
    except duckdb.Error as error:
        raise QueryFailed(str(error).strip()) from error
    finally:
        connection.close()


def text_of(value: object) -> str:
    """A value as it is printed: decimals exactly (``1234.50``), times in ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    return text_of(value)  # decimals as strings: exact, as everywhere in this service


def render(result: Result, output_format: str) -> str:
    """The result as an aligned table, CSV, or JSON (an array of objects)."""
    if output_format == "json":
        return json.dumps(
            [dict(zip(result.columns, map(_json_value, row), strict=True)) for row in result.rows],
            indent=2,
        )
    if output_format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([text_of(value) for value in row] for row in result.rows)
        return out.getvalue().rstrip("\n")
    if output_format == "table":
        return _table(result.columns, [[_cell(value) for value in row] for row in result.rows])
    raise ValueError(f"unknown format {output_format!r}; choose from {', '.join(FORMATS)}")


def _cell(value: object) -> str:
    text = text_of(value)
    return text if len(text) <= CELL_WIDTH_MAX else text[: CELL_WIDTH_MAX - 1] + "…"


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    numeric = [
        bool(rows) and all(_numeric(row[i]) for row in rows if row[i]) for i in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    separator = "  ".join("-" * width for width in widths)
    body = [line(row) for row in rows]
    return "\n".join([line(list(columns)), separator, *body, f"({len(rows)} rows)"])


def _numeric(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
