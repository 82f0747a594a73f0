"""Snowflake names and types, and a batch's columns as they are staged (Parquet for COPY INTO,
or JSON for one INSERT ... SELECT over FLATTEN).

A batch is loaded into a temporary table typed after its values (not after the target's
columns): the conversion to the target's types happens in the UPDATE and INSERT that apply it,
so a value the target refuses fails a statement that can be re-run on part of the staged rows
(bisect), without staging the rows again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from retl_dagster.common.encoding import to_json_value

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_PART = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def ident(name: str) -> str:
    """A stored name as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def stored_name(name: str) -> str:
    """The name Snowflake stores for `name` written unquoted: upper case (a name that is not a
    plain identifier can only be a quoted one, kept as it is)."""
    return name.upper() if _PLAIN.fullmatch(name) else name


def parse_object(text: str) -> list[str] | None:
    """`schema.table` or `database.schema.table` as stored names (parts in double quotes keep
    their case, as in Snowflake's SQL), or None when `text` is not such a name."""
    parts: list[str] = []
    pos = 0
    while True:
        m = _PART.match(text, pos)
        if m is None:
            return None
        quoted, plain = m.group(1), m.group(2)
        parts.append(quoted.replace('""', '"') if quoted is not None else plain.upper())
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            return None
        pos += 1
    return parts if 2 <= len(parts) <= 3 else None


# -- the target's column types, from the warehouse's -----------------------------------------
_INTEGERS = frozenset(
    {
        "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
        "UINTEGER", "UBIGINT", "UHUGEINT", "INT1", "INT2", "INT4", "INT8", "SERIAL", "BIGSERIAL",
        "SMALLSERIAL", "LONG", "SHORT", "SIGNED", "BYTEINT",
    }
)  # fmt: skip
_FLOATS = frozenset({"DOUBLE", "FLOAT", "REAL", "DOUBLE PRECISION", "FLOAT4", "FLOAT8", "INTERVAL"})
_TEXTS = frozenset(
    {"VARCHAR", "TEXT", "STRING", "CHAR", "CHARACTER", "CHARACTER VARYING", "BPCHAR", "UUID",
     "NAME", "CITEXT", "TIME WITH TIME ZONE", "TIMETZ", "ENUM"}
)  # fmt: skip
_SIMPLE = {
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIME WITHOUT TIME ZONE": "TIME",
    "TIMESTAMP": "TIMESTAMP_NTZ",
    "DATETIME": "TIMESTAMP_NTZ",
    "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP_NTZ",
    "TIMESTAMP_NTZ": "TIMESTAMP_NTZ",
    "TIMESTAMP_S": "TIMESTAMP_NTZ",
    "TIMESTAMP_MS": "TIMESTAMP_NTZ",
    "TIMESTAMP_NS": "TIMESTAMP_NTZ",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP_TZ",
    "TIMESTAMPTZ": "TIMESTAMP_TZ",
    "TIMESTAMP_TZ": "TIMESTAMP_TZ",
    "TIMESTAMP_LTZ": "TIMESTAMP_TZ",
    "BLOB": "BINARY",
    "BYTEA": "BINARY",
    "BINARY": "BINARY",
    "VARBINARY": "BINARY",
}
UNBOUNDED_NUMERIC = "NUMBER(38,9)"
"""A NUMERIC without precision (PostgreSQL's): 29 digits before the point, 9 after."""


def column_type(warehouse_type: str) -> str:
    """A Snowflake column type for a warehouse column's type (DuckDB's, PostgreSQL's or
    Snowflake's own names); nested and unknown types as VARIANT."""
    t = " ".join(warehouse_type.upper().split())
    m = re.fullmatch(r"(?:DECIMAL|NUMERIC|NUMBER)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", t)
    if m:
        precision = min(int(m.group(1)), 38)
        scale = min(int(m.group(2) or 0), precision)
        return f"NUMBER({precision},{scale})"
    if t in ("DECIMAL", "NUMERIC"):
        return UNBOUNDED_NUMERIC
    if t == "NUMBER" or t in _INTEGERS:
        return "NUMBER(38,0)"
    if t in _FLOATS:
        return "FLOAT"
    base = re.sub(r"\s*\(.*\)$", "", t)
    if base in _TEXTS or t in _TEXTS:
        return "VARCHAR"
    return _SIMPLE.get(t, "VARIANT")


def cast_type(data_type: str, precision: Any, scale: Any) -> str:
    """A type to CAST to, from INFORMATION_SCHEMA.COLUMNS' DATA_TYPE (TEXT, NUMBER...)."""
    t = data_type.upper()
    if t == "NUMBER":
        return f"NUMBER({int(precision or 38)},{int(scale or 0)})"
    if t == "TEXT":
        return "VARCHAR"
    return t


# -- staged columns ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Staged:
    """One column of a batch as it is staged."""

    sf_type: str
    """The temporary table's column type."""
    arrow: pa.DataType
    kind: str
    """`json` (nested values as JSON text), `binary` (bytes as hex text) or `scalar`."""
    values: list[Any]
    """Python values of `arrow`'s type (None for null)."""

    def array(self) -> pa.Array:
        return pa.array(self.values, type=self.arrow)

    def json_values(self) -> list[Any]:
        """The values as JSON scalars that `value[i]::<sf_type>` reads back exactly."""
        if self.arrow == pa.bool_() or self.sf_type in ("VARCHAR",):
            return self.values
        if pa.types.is_integer(self.arrow):
            return self.values
        if pa.types.is_floating(self.arrow):
            return [_json_float(v) for v in self.values]
        if pa.types.is_decimal(self.arrow):
            return [None if v is None else str(v) for v in self.values]
        return [None if v is None else v.isoformat() for v in self.values]


def _json_float(v: float | None) -> float | str | None:
    if v is None or math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


_INT64 = 2**63


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float | dt.timedelta):
        return "float"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, dt.datetime):
        return "tstz" if value.tzinfo is not None else "ts"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time" if value.tzinfo is None else "text"
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary"
    if isinstance(value, dict | list | tuple):
        return "json"
    return "text"


def _merged(kinds: set[str]) -> str:
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds <= {"int", "decimal"}:
        return "decimal"
    if kinds <= {"int", "float", "decimal"}:
        return "float"
    return "json" if "json" in kinds else "text"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    encoded = to_json_value(value)
    return encoded if isinstance(encoded, str) else json.dumps(encoded)


def _text(values: Sequence[Any]) -> Staged:
    return Staged(
        "VARCHAR", pa.string(), "scalar", [None if v is None else _as_text(v) for v in values]
    )


def _decimal(values: Sequence[Any]) -> Staged:
    numbers = [
        None if v is None or (isinstance(v, Decimal) and not v.is_finite()) else Decimal(v)
        for v in values
    ]
    scale, whole = 0, 1
    for d in numbers:
        if d is None:
            continue
        sign, digits, exponent = d.as_tuple()
        assert isinstance(exponent, int)
        scale = max(scale, -exponent)
        whole = max(whole, len(digits) + exponent)
    if scale + whole > 38:
        return _text(values)
    return Staged(f"NUMBER(38,{scale})", pa.decimal128(38, scale), "scalar", numbers)


def stage_column(values: Sequence[Any]) -> Staged:
    """How one column of a batch is staged, from its Python values."""
    kinds = {_kind(v) for v in values if v is not None}
    kind = _merged(kinds) if kinds else "text"
    if kind == "bool":
        return Staged("BOOLEAN", pa.bool_(), "scalar", list(values))
    if kind == "int":
        if all(v is None or -_INT64 <= v < _INT64 for v in values):
            return Staged("NUMBER(38,0)", pa.int64(), "scalar", list(values))
        return _decimal(values)
    if kind == "decimal":
        return _decimal(values)
    if kind == "float":
        floats = [
            None if v is None else v.total_seconds() if isinstance(v, dt.timedelta) else float(v)
            for v in values
        ]
        return Staged("FLOAT", pa.float64(), "scalar", floats)
    if kind == "tstz":
        return Staged(
            "TIMESTAMP_TZ",
            pa.timestamp("us", tz="UTC"),
            "scalar",
            [None if v is None else v.astimezone(dt.UTC) for v in values],
        )
    if kind == "ts":
        return Staged("TIMESTAMP_NTZ", pa.timestamp("us"), "scalar", list(values))
    if kind == "date":
        return Staged("DATE", pa.date32(), "scalar", list(values))
    if kind == "time":
        return Staged("TIME", pa.time64("us"), "scalar", list(values))
    if kind == "binary":
        hexes = [None if v is None else bytes(v).hex() for v in values]
        return Staged("VARCHAR", pa.string(), "binary", hexes)
    if kind == "json":
        return Staged(
            "VARCHAR",
            pa.string(),
            "json",
            [
                None
                if v is None
                else json.dumps(to_json_value(v), separators=(",", ":"), allow_nan=False)
                for v in values
            ],
        )
    return _text(values)


def value_sql(source: str, staged_kind: str, target_type: str) -> str:
    """The expression writing staged column `source` into a column of `target_type`
    (INFORMATION_SCHEMA's DATA_TYPE): JSON text becomes a VARIANT, OBJECT or ARRAY, hex text
    BINARY; everything else converts as an INSERT converts it."""
    t = target_type.upper()
    if t in ("VARIANT", "OBJECT", "ARRAY"):
        value = f"parse_json({source})" if staged_kind == "json" else f"to_variant({source})"
        return value if t == "VARIANT" else f"{value}::{t}"
    if t == "BINARY" and staged_kind == "binary":
        return f"to_binary({source}, 'HEX')"
    return source
