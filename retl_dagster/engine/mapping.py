"""Mapping stage: a diff row (model columns) -> the fields a destination receives."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from retl_dagster.common.encoding import (
    FLOAT_SAFE_DIGITS,
    dumps,
    json_text_sql,
    to_json_value,
)
from retl_dagster.destinations.base import EncodedRows, Record
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.kinds import Column, Static
from retl_dagster.engine.warehouse import quote_ident, quote_literal


def _as_is(value: Any) -> Any:
    return value


def _float(v: Any) -> Any:
    return v if v is None or math.isfinite(v) else None


def _isoformat(v: Any) -> Any:
    return None if v is None else v.isoformat()


def _decimal(v: Decimal | None) -> Any:
    return None if v is None else to_json_value(v)


def json_column(arr: pa.Array) -> list[Any]:
    """A whole Arrow column as JSON-ready values, the same values to_json_value gives."""
    type_ = arr.type
    if pa.types.is_decimal(type_) and type_.precision <= FLOAT_SAFE_DIGITS:
        # Exactly float(Decimal) (an integer below 2**53 over a power of ten: one correctly
        # rounded division), without a Decimal object per value; integral values stay ints.
        return [
            int(v) if v is not None and v.is_integer() else v
            for v in arr.cast(pa.float64()).to_pylist()
        ]
    encode = column_encoder(type_)
    values = arr.to_pylist()
    return [encode(v) for v in values] if encode else values


def column_encoder(type_: pa.DataType) -> Callable[[Any], Any] | None:
    """to_json_value specialised to one Arrow column type, chosen once per column instead of
    per value; None where the values are JSON already (text, integers, booleans)."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return None
    if pa.types.is_integer(type_) or pa.types.is_boolean(type_) or pa.types.is_null(type_):
        return None
    if pa.types.is_floating(type_):
        return _float
    if pa.types.is_decimal(type_):
        return _decimal
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_) or pa.types.is_time(type_):
        return _isoformat
    return to_json_value


def encoded_rows(table: pa.Table | pa.RecordBatch) -> EncodedRows:
    """The encoded columns of a result of `FieldsEncoder.select_sql`."""

    def column(name: str) -> pa.StringArray | None:
        if name not in table.column_names:
            return None
        values = table.column(name)
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

    ops, keys, idents = column("op"), column("key"), column("ident")
    assert ops is not None and keys is not None and idents is not None
    return EncodedRows(ops, keys, idents, fields_json=column("fields"), items=column("item"))


class FieldsEncoder:
    """Each row's mapped fields as JSON text, written by DuckDB over the Arrow batch: the fast
    path of a plain mapping (columns and statics) to a destination with `encoded_rows`, which
    builds no dict per row. The values are those to_json_value gives (a parity test holds the
    two encoders together); `of` returns None where a column's type needs the Python path."""

    def __init__(self, mapper: Mapper, item_sql: str | None = None) -> None:
        self.mapper = mapper
        self.item_sql = item_sql
        """The destination's `item_sql`."""
        self.sql: str | None = None
        self.schema: pa.Schema | None = None
        self.con: duckdb.DuckDBPyConnection | None = None

    def select_sql(self, schema: pa.Schema, source: str = "batch", keep: str = "") -> str | None:
        """SELECT over relation `source` (a diff's rows, its columns as in `schema`) of each
        row's encoded columns (`encoded_rows` reads them) and the columns `keep` lists; None
        where the mapping or a column's type needs Records."""
        m = self.mapper
        if not m.plain:
            return None
        parts: list[str] = []
        for mapping in m.mappings:
            kind = mapping.kind
            name = quote_literal(dumps(mapping.to).decode() + ":")
            if isinstance(kind, Static):
                value = dumps(to_json_value(kind.constant)).decode()
                parts.append(f"{name} || {quote_literal(value)}")
                continue
            assert isinstance(kind, Column)
            value_sql = json_text_sql(quote_ident(kind.source), schema.field(kind.source).type)
            if value_sql is None:
                return None
            # concat_ws leaves out NULLs: a null field the sync does not send is left out.
            parts.append(
                f"{name} || coalesce({value_sql}, 'null')"
                if m.sync_nulls[mapping.to]
                else f"{name} || ({value_sql})"
            )
        fields = "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'" if parts else "'{}'"
        op = "'event'" if m.events else "_retl_op"
        if m.delete_behavior == "clear":
            cleared = dumps({mapping.to: None for mapping in m.mappings}).decode()
            removed_op, removed_fields = "'changed'", quote_literal(cleared)
        else:
            removed_op, removed_fields = "'removed'", "null"
        # The text Batch.batch_id hashes per record (null without a hash), and the
        # destination's request item after a comma, so a batch's items are one run of bytes;
        # the items carry the fields, which are then not written twice.
        item = f", ',' || ({self.item_sql}) as item" if self.item_sql else ""
        dropped = "fields, hash" if self.item_sql else "hash"
        return f"""select * exclude ({dropped}),
            chr(31) || op || chr(30) || key || chr(30) || hash as ident {item}
        from (select
            case when _retl_op = 'removed' then {removed_op} else {op} end as op,
            _retl_key::varchar as key,
            case when _retl_op = 'removed' then {removed_fields} else {fields} end as fields,
            case when _retl_op = 'removed' then null else _retl_hash::varchar end as hash
            {", " + keep if keep else ""}
        from {source})"""

    def of(self, rb: pa.RecordBatch) -> EncodedRows | None:
        """The batch's rows encoded, or None where the mapping or a column's type needs
        Records."""
        if self.schema is None or not rb.schema.equals(self.schema):
            self.schema, self.sql = rb.schema, self.select_sql(rb.schema)
        if self.sql is None:
            return None
        if self.con is None:
            self.con = duckdb.connect()
            # Row i out is row i in: the load pairs these rows with the batch's by position.
            self.con.execute("set preserve_insertion_order = true")
        self.con.register("batch", rb)
        try:
            return encoded_rows(self.con.sql(self.sql).to_arrow_table())
        finally:
            self.con.unregister("batch")

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


class Mapper:
    """Builds Records for one sync."""

    def __init__(self, config: SyncConfig, encode: bool = True, accepts_nulls: bool = True) -> None:
        self.encode: Callable[[Any], Any] = to_json_value if encode else _as_is
        self.mappings = config.mappings
        # A destination that refuses nulls gets none: the field is left alone instead.
        self.sync_nulls = {m.to: m.sync_nulls and accepts_nulls for m in config.mappings}
        self.delete_behavior = config.delete_behavior
        self.events = config.mode == "events"
        self.match_column = config.match.column if config.match else None
        # Column and static mappings (no object or array to build) map a whole Arrow batch
        # column by column, which is several times cheaper than row by row.
        self.plain = all(m.kind.plain for m in config.mappings)

    def fields(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.mappings:
            value = m.kind.value(row)
            if value is None and not self.sync_nulls[m.to]:
                continue
            out[m.to] = self.encode(value)
        return out

    def removed(self, key: str, match: Any, dest_id: str | None) -> Record:
        """A row that left the model, as its delete behaviour sends it."""
        if self.delete_behavior == "clear":
            # Keep the destination record, blank the fields this sync owns.
            return Record("changed", key, {m.to: None for m in self.mappings}, match, dest_id)
        return Record("removed", key, {}, match, dest_id)

    def record(self, op: str, key: str, row: dict[str, Any]) -> Record:
        """`row`: the diff row; `_retl_match` and `_retl_dest_id` come from the last sync."""
        dest_id = row.get("_retl_dest_id")
        if op == "removed":
            return self.removed(key, row.get("_retl_match"), dest_id)
        match_value = self.encode(row.get(self.match_column)) if self.match_column else None
        op_out = "event" if self.events else op
        return Record(
            op_out,  # type: ignore[arg-type]
            key,
            self.fields(row),
            match_value,
            dest_id,
            row.get("_retl_hash"),
        )

    def records(self, rb: pa.RecordBatch) -> list[Record]:
        """Records of a batch of diff rows (`_retl_op`, `_retl_key`, `_retl_hash`,
        `_retl_match`, `_retl_dest_id` and the model columns)."""
        if not self.plain:
            return [self.record(r["_retl_op"], r["_retl_key"], r) for r in rb.to_pylist()]
        n = rb.num_rows
        ops = rb.column("_retl_op").to_pylist()
        keys = rb.column("_retl_key").to_pylist()
        hashes = rb.column("_retl_hash").to_pylist()
        matches = rb.column("_retl_match").to_pylist()
        dest_ids = rb.column("_retl_dest_id").to_pylist()
        columns: list[list[Any]] = []
        for m in self.mappings:
            kind = m.kind
            if isinstance(kind, Static):
                columns.append([self.encode(kind.constant)] * n)
                continue
            assert isinstance(kind, Column)
            arr = rb.column(kind.source)
            columns.append(json_column(arr) if self.encode is to_json_value else arr.to_pylist())
        if self.match_column:
            arr = rb.column(self.match_column)
            new_matches: list[Any] = (
                json_column(arr) if self.encode is to_json_value else arr.to_pylist()
            )
        else:
            new_matches = [None] * n
        names = [m.to for m in self.mappings]
        drop_nulls = [to for to in names if not self.sync_nulls[to]]
        out: list[Record] = []
        for i, values in enumerate(zip(*columns, strict=True)):
            op, key = ops[i], keys[i]
            if op == "removed":
                out.append(self.removed(key, matches[i], dest_ids[i]))
                continue
            fields = dict(zip(names, values, strict=True))
            for to in drop_nulls:
                if fields[to] is None:
                    del fields[to]
            out.append(
                Record(
                    "event" if self.events else op,
                    key,
                    fields,
                    new_matches[i],
                    dest_ids[i],
                    hashes[i],
                )
            )
        return out
