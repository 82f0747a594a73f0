"""Warehouse types -> Arrow types of the files' columns, and records -> Arrow tables / JSON rows.

The engine tells the destination each mapped field's warehouse type (`prepare`), as the
warehouse spells it: DuckDB (`BIGINT`, `DECIMAL(18,2)`, `TIMESTAMP WITH TIME ZONE`,
`STRUCT(...)`), PostgreSQL (`bigint`, `numeric(18,2)`, `timestamp with time zone`, `jsonb`) or
Snowflake (`NUMBER(38,0)`, `TIMESTAMP_NTZ`, `VARIANT`). Scalars keep their type; nested values
(structs, lists, maps, JSON, VARIANT) and types a file has no column type for (intervals,
time with time zone, numerics of unbounded precision) are written as text: JSON for nested
values, the exact text otherwise.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from retl_dagster.common.encoding import to_json_value
from retl_dagster.destinations.base import Record

KEY = "_key"
"""The record's key (the sync's primary key, as text): one column of every file."""
OP = "_op"
"""added, changed, removed or event: a column of change files."""

_DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC|NUMBER)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_NESTED = re.compile(r"^(STRUCT|MAP|UNION|LIST|ARRAY|OBJECT|VARIANT|JSON|JSONB)\b|\[")
_SIMPLE: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "TINYINT": pa.int8(),
    "INT1": pa.int8(),
    "SMALLINT": pa.int16(),
    "INT2": pa.int16(),
    "INTEGER": pa.int32(),
    "INT": pa.int32(),
    "INT4": pa.int32(),
    "BIGINT": pa.int64(),
    "INT8": pa.int64(),
    "LONG": pa.int64(),
    "HUGEINT": pa.decimal128(38, 0),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
    "REAL": pa.float32(),
    "FLOAT4": pa.float32(),
    # DuckDB's FLOAT is 4 bytes, Snowflake's 8: a double holds either exactly.
    "FLOAT": pa.float64(),
    "FLOAT8": pa.float64(),
    "DOUBLE": pa.float64(),
    "DOUBLE PRECISION": pa.float64(),
    "VARCHAR": pa.string(),
    "TEXT": pa.string(),
    "STRING": pa.string(),
    "CHAR": pa.string(),
    "BPCHAR": pa.string(),
    "CHARACTER": pa.string(),
    "CHARACTER VARYING": pa.string(),
    "NAME": pa.string(),
    "UUID": pa.string(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "TIME WITHOUT TIME ZONE": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP WITHOUT TIME ZONE": pa.timestamp("us"),
    "TIMESTAMP_NTZ": pa.timestamp("us"),
    "TIMESTAMP_S": pa.timestamp("us"),
    "TIMESTAMP_MS": pa.timestamp("us"),
    "TIMESTAMP_NS": pa.timestamp("us"),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP_TZ": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP_LTZ": pa.timestamp("us", tz="UTC"),
    "BLOB": pa.binary(),
    "BYTEA": pa.binary(),
    "BINARY": pa.binary(),
    "VARBINARY": pa.binary(),
    "BYTES": pa.binary(),
}


@dataclass(frozen=True)
class Column:
    """One mapped field as a file column."""

    name: str
    warehouse_type: str | None
    type: pa.DataType
    """The column's Arrow type in Parquet and CSV files."""
    json: bool
    """Written as JSON text in Parquet and CSV (nested values), as JSON itself in JSON Lines."""

    def describe(self, file_type: pa.DataType) -> dict[str, Any]:
        """The column as a manifest lists it (`file_type`: its type in the file)."""
        out: dict[str, Any] = {"name": self.name}
        if self.json:
            out["type"] = "json"
        elif pa.types.is_binary(self.type) and pa.types.is_string(file_type):
            out |= {"type": "binary", "encoding": "base64"}
        else:
            out["type"] = str(file_type)
        out["warehouse_type"] = self.warehouse_type
        return out


def arrow_type(warehouse_type: str | None) -> tuple[pa.DataType, bool]:
    """(Arrow type, written as JSON text) of a warehouse type."""
    if warehouse_type is None:
        return pa.string(), True
    t = " ".join(warehouse_type.strip().upper().split())
    if _NESTED.search(t):
        return pa.string(), True
    m = _DECIMAL.match(t)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if 0 < precision <= 38 and scale <= precision:
            return pa.decimal128(precision, scale), False
        if 38 < precision <= 76 and scale <= precision:
            return pa.decimal256(precision, scale), False
        return pa.string(), False
    # `varchar(255)`, `character varying(40)`, `timestamp(6) with time zone`
    bare = re.sub(r"\s*\(\s*\d+\s*\)", "", t)
    found = _SIMPLE.get(bare)
    return (found, False) if found is not None else (pa.string(), False)


def columns_of(field_types: dict[str, str]) -> list[Column]:
    """The file columns of the fields a sync maps (field -> warehouse type), in their order."""
    out = []
    for name, warehouse_type in field_types.items():
        type_, as_json = arrow_type(warehouse_type)
        out.append(Column(name, warehouse_type, type_, as_json))
    return out


def file_schema(columns: Sequence[Column], *, changes: bool, binary_as_text: bool) -> pa.Schema:
    """The Arrow schema of a file: `_key`, `_op` in change files, then the fields. CSV has no
    binary: its binary columns are base64 text (as every JSON destination sends bytes)."""
    fields = [pa.field(KEY, pa.string(), nullable=False)]
    if changes:
        fields.append(pa.field(OP, pa.string(), nullable=False))
    for c in columns:
        type_ = pa.string() if binary_as_text and pa.types.is_binary(c.type) else c.type
        fields.append(pa.field(c.name, type_))
    return pa.schema(fields)


def _text(value: Any) -> str | None:
    """A value of a text column: JSON text for what is not a string already."""
    if value is None or isinstance(value, str):
        return value
    encoded = to_json_value(value)
    return encoded if isinstance(encoded, str) else orjson.dumps(encoded).decode()


def _base64(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return base64.b64encode(bytes(value)).decode("ascii")


def _column(values: list[Any], schema_type: pa.DataType, column: Column) -> pa.Array:
    if column.json or pa.types.is_string(schema_type):
        convert = _base64 if pa.types.is_binary(column.type) else _text
        return pa.array([convert(v) for v in values], pa.string())
    return pa.array(values, schema_type)


def table_of(records: Sequence[Record], columns: Sequence[Column], schema: pa.Schema) -> pa.Table:
    """The records as a table of `schema` (file_schema's); raises pyarrow's error (ArrowInvalid,
    ArrowTypeError, OverflowError) naming the field where a value does not fit its type."""
    changes = OP in schema.names
    arrays: list[pa.Array] = [pa.array([r.key for r in records], pa.string())]
    if changes:
        arrays.append(pa.array([r.op for r in records], pa.string()))
    for c in columns:
        values = [r.fields.get(c.name) for r in records]
        try:
            arrays.append(_column(values, schema.field(c.name).type, c))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError) as exc:
            raise type(exc)(f"field '{c.name}' ({c.warehouse_type}): {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def json_rows(records: Sequence[Record], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """The records as JSON Lines rows: `_key`, `_op`, then every field (null where a record has
    none), values encoded as every JSON destination encodes them."""
    names = [c.name for c in columns]
    return [
        {KEY: r.key, OP: r.op, **{n: to_json_value(r.fields.get(n)) for n in names}}
        for r in records
    ]
