from __future__ import annotations

import contextlib
import datetime as dt
import json
import operator
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import psycopg
import sqlalchemy as sa
from psycopg import sql as psql
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.exc import DBAPIError, OperationalError

from retl_dagster.common.encoding import to_json_value
from retl_dagster.destinations.base import Batch, BatchResult, Destination, Record
from retl_dagster.destinations.bisect import RequestBudget, send_isolating
from retl_dagster.destinations.impl.postgres.config import MAX_CONCURRENCY, PostgresConfig
from retl_dagster.destinations.impl.postgres.exceptions import (
    PostgresConnectError,
    PostgresSchemaError,
)

_SIMPLE_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "VARCHAR": sa.Text(),
    "BIGINT": sa.BigInteger(),
    "INTEGER": sa.Integer(),
    "SMALLINT": sa.SmallInteger(),
    "TINYINT": sa.SmallInteger(),
    "UTINYINT": sa.SmallInteger(),
    "USMALLINT": sa.Integer(),
    "UINTEGER": sa.BigInteger(),
    "UBIGINT": sa.Numeric(20, 0),
    "HUGEINT": sa.Numeric(38, 0),
    "DOUBLE": sa.Double(),
    "FLOAT": sa.REAL(),
    "BOOLEAN": sa.Boolean(),
    "DATE": sa.Date(),
    "TIME": sa.Time(),
    "TIMESTAMP": sa.DateTime(),
    "TIMESTAMP WITH TIME ZONE": sa.DateTime(timezone=True),
    "UUID": pg.UUID(as_uuid=True),
    "BLOB": sa.LargeBinary(),
    "INTERVAL": sa.Interval(),
}


def column_type(warehouse_type: str) -> sa.types.TypeEngine[Any]:
    """A PostgreSQL column type for a DuckDB type; nested types (STRUCT, LIST, MAP) as JSONB."""
    t = warehouse_type.upper()
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        return sa.Numeric(int(m.group(1)), int(m.group(2)))
    return _SIMPLE_TYPES.get(t, pg.JSONB())


COPY_MIN_ROWS = 50
"""A group of at least this many rows goes through COPY; fewer (a record isolated after a
refused batch, say) through a plain INSERT."""


def _naive(value: Any) -> bool:
    return type(value) is dt.datetime and value.tzinfo is None


def _aware(value: Any) -> bool:
    return type(value) is dt.datetime and value.tzinfo is not None


BINARY_COPY: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "BIGINT": ("int8", lambda v: type(v) is int),
    "TEXT": ("text", lambda v: type(v) is str),
    "VARCHAR": ("varchar", lambda v: type(v) is str),
    "NUMERIC": ("numeric", lambda v: type(v) is Decimal),
    "DOUBLE PRECISION": ("float8", lambda v: type(v) is float),
    "BOOLEAN": ("bool", lambda v: type(v) is bool),
    "DATE": ("date", lambda v: type(v) is dt.date),
    "TIMESTAMP WITHOUT TIME ZONE": ("timestamp", _naive),
    "TIMESTAMP WITH TIME ZONE": ("timestamptz", _aware),
}
"""Column types (as PostgreSQL names them, without their parameters) that COPY writes in
binary, with psycopg's name for each and the Python values that go into it exactly. Not
SMALLINT, INTEGER or REAL: psycopg's binary writer wraps or rounds a value out of their range
(70000 arrives in a SMALLINT as 4464) where text input refuses it. Any other column or value
goes as text, which PostgreSQL parses."""


def _jsonb(value: Any) -> Jsonb:
    """A JSON value for COPY, with Decimals and datetimes encoded as every JSON destination
    encodes them."""
    return Jsonb(value, dumps=lambda v: json.dumps(to_json_value(v), allow_nan=False))


def _pg_error(exc: Exception) -> str:
    """PostgreSQL's own message (first line), without SQLAlchemy's statement dump (an error of
    the COPY path comes from psycopg itself, unwrapped)."""
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0]


class PostgresDestination(Destination[PostgresConfig]):
    type: ClassVar[str] = "postgres"
    config_class = PostgresConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = 50_000
    native_values = True
    requires_object = True
    requires_match = frozenset({"insert", "update", "upsert", "mirror"})
    # SQLAlchemy's Engine and its connection pool are thread-safe; `deliver` only reads what
    # `prepare` set, and each batch is its own transaction.
    max_concurrency = MAX_CONCURRENCY

    def __init__(self, name: str, config: PostgresConfig) -> None:
        super().__init__(name, config)
        # JSONB values may hold Decimals and datetimes: encode them as every JSON destination does.
        self.engine = sa.create_engine(
            config.url.get_secret_value(),
            pool_pre_ping=True,
            pool_size=max(5, self.concurrency),
            json_serializer=lambda v: json.dumps(to_json_value(v), allow_nan=False),
        )
        self.table: sa.Table | None = None
        self.key = ""
        self.mapped: frozenset[str] = frozenset()
        """The sync's mapped field names (a record carries all, or some where nulls are left
        out)."""
        self.binary: dict[str, tuple[str, Callable[[Any], bool]] | None] = {}
        """Per column of the table: psycopg's type for a binary COPY and the Python values it
        takes (BINARY_COPY), or None where the column goes as text."""

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        assert object_ and match_field and match_type  # check_sync guarantees them
        schema, _, name = object_.rpartition(".")
        schema = schema or "public"
        self.key = match_field
        self.mapped = frozenset(field_types)
        md = sa.MetaData()
        try:
            with self.engine.begin() as conn:
                if not sa.inspect(conn).has_table(name, schema=schema):
                    if not self.config.create_table:
                        raise PostgresSchemaError(
                            f"destination '{self.name}': table {schema}.{name} does not exist; "
                            "create it or set create_table: true"
                        )
                    cols = [sa.Column(match_field, column_type(match_type), primary_key=True)]
                    cols += [
                        sa.Column(f, column_type(t))
                        for f, t in field_types.items()
                        if f != match_field
                    ]
                    sa.Table(name, md, *cols, schema=schema).create(conn)
                table = sa.Table(name, md, schema=schema, autoload_with=conn)
                unique = {
                    tuple(c["column_names"])
                    for c in sa.inspect(conn).get_unique_constraints(name, schema=schema)
                }
                unique.add(tuple(table.primary_key.columns.keys()))
                unique |= {
                    tuple(str(c) for c in i["column_names"])
                    for i in sa.inspect(conn).get_indexes(name, schema=schema)
                    if i["unique"]
                }
        except OperationalError as exc:
            raise PostgresSchemaError(f"destination '{self.name}': {_pg_error(exc)}") from exc
        missing = [f for f in [match_field, *field_types] if f not in table.c]
        if missing:
            raise PostgresSchemaError(
                f"destination '{self.name}': table {schema}.{name} has no column(s) "
                f"{', '.join(missing)}; add them or change the sync's mappings"
            )
        if (match_field,) not in unique:
            raise PostgresSchemaError(
                f"destination '{self.name}': {schema}.{name}.{match_field} is not unique; "
                f"add a primary key or unique index on it (record matching needs one)"
            )
        self.table = table
        # Each column's binary COPY type (None: text), worked out once, not once a batch.
        self.binary = {
            c.name: BINARY_COPY.get(
                re.sub(r"\(.*\)", "", c.type.compile(dialect=self.engine.dialect)).strip()
            )
            for c in table.columns
        }

    def check(self, object_: str | None = None) -> str:
        """Log in and, for a sync's `object`, read the table's columns and this user's
        privileges on it (or on its schema, where the first run would create it). Read-only:
        nothing is created."""
        try:
            with self.engine.connect() as conn:
                user, db = conn.execute(sa.text("select current_user, current_database()")).one()
                said = f"logged in to database {db} as {user}"
                if not object_:
                    return said
                schema, _, name = object_.rpartition(".")
                schema = schema or "public"
                if sa.inspect(conn).has_table(name, schema=schema):
                    return said + "; " + self._table_check(conn, schema, name)
                if not self.config.create_table:
                    raise PostgresSchemaError(
                        f"destination '{self.name}': table {schema}.{name} does not exist. Fix: "
                        "create it, or set create_table: true"
                    )
                may = conn.execute(
                    sa.text(
                        # CASE: has_schema_privilege fails on a schema that does not exist.
                        "select case when exists(select from pg_namespace where nspname = :s) "
                        "then has_schema_privilege(:s, 'CREATE') else false end"
                    ),
                    {"s": schema},
                ).scalar()
                if not may:
                    raise PostgresSchemaError(
                        f"destination '{self.name}': table {schema}.{name} does not exist and "
                        f"{user} cannot create it in schema {schema}. Fix: create the schema "
                        f"or grant CREATE on it to {user}, or create the table"
                    )
                return said + f"; table {schema}.{name} does not exist yet and {user} may create it"
        except OperationalError as exc:
            raise PostgresConnectError(
                f"destination '{self.name}': cannot connect: {_pg_error(exc)}. Fix: check the "
                "url's host, port, database, user and password, and that the server accepts "
                "connections from here"
            ) from None

    def _table_check(self, conn: sa.Connection, schema: str, name: str) -> str:
        columns = sa.inspect(conn).get_columns(name, schema=schema)
        wanted = ("INSERT", "UPDATE", "DELETE")
        missing = [
            p
            for p in wanted
            if not conn.execute(
                sa.text("select has_table_privilege(:t, :p)"),
                {"t": f'"{schema}"."{name}"', "p": p},
            ).scalar()
        ]
        if missing:
            raise PostgresSchemaError(
                f"destination '{self.name}': no {', '.join(missing)} privilege on table "
                f"{schema}.{name}. Fix: grant {', '.join(wanted)} on it to this user"
            )
        return f"table {schema}.{name} exists ({len(columns)} columns) and may be written"

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        try:
            with self.engine.begin() as conn:  # the whole batch, or nothing
                refused_whole = self._apply(conn, batch.mode, batch.records)
            return BatchResult(rejected=refused_whole)
        except (OperationalError, psycopg.OperationalError):
            raise  # connection trouble: the run fails; nothing in the batch is marked synced
        except (DBAPIError, psycopg.Error):
            # SQLAlchemy's for the statements it runs; psycopg's own for the COPY path's.
            pass
        # A bad value failed the batch: halves of it are applied, each in its own transaction,
        # until each bad record is alone; only those are rejected (one bad row in a default
        # batch of 50,000 costs about 32 transactions, not 50,000).
        rejected: dict[str, str] = {}

        def apply(records: Sequence[Record]) -> str | None:
            try:
                with self.engine.begin() as conn:
                    refused = self._apply(conn, batch.mode, list(records))
            except (OperationalError, psycopg.OperationalError):
                raise
            except (DBAPIError, psycopg.Error) as exc:
                return _pg_error(exc)
            rejected.update(refused)  # e.g. update mode's missing rows, in a committed chunk
            return None

        def reject(record: Record, reason: str) -> None:
            rejected[record.key] = reason

        # Transactions are not rate limited: a budget that never runs out (halving n records
        # costs under 2n transactions).
        send_isolating(batch.records, apply, reject, RequestBudget(2 * len(batch.records)))
        return BatchResult(rejected=rejected)

    def _key_value(self, record: Record) -> Any:
        assert self.table is not None
        value = record.match_value
        if record.op == "removed" and isinstance(value, str):
            # Removed rows carry the key as last synced, as text: back to the column's type.
            with contextlib.suppress(NotImplementedError, TypeError, ValueError):
                value = self.table.c[self.key].type.python_type(value)
        return value

    def _apply(self, conn: sa.Connection, mode: str, records: list[Record]) -> dict[str, str]:
        assert self.table is not None
        t, key = self.table, self.key
        rejected: dict[str, str] = {}
        removed = [self._key_value(r) for r in records if r.op == "removed"]
        if removed:
            conn.execute(sa.delete(t).where(t.c[key].in_(removed)))
        writes = [r for r in records if r.op != "removed"]
        if mode == "update" and writes:
            wanted = [self._key_value(r) for r in writes]
            found: set[Any] = set(conn.scalars(sa.select(t.c[key]).where(t.c[key].in_(wanted))))
            for r, v in zip(list(writes), wanted, strict=True):
                if v not in found:
                    rejected[r.key] = (
                        f"no row with {key} = {v!r} in {t.fullname}; update mode never creates rows"
                    )
                    writes.remove(r)
        # One statement per set of fields (sync_nulls: false leaves some out of some records);
        # a record's fields come in the mappings' order, so the set is the tuple of its keys.
        by_fields: dict[tuple[str, ...], list[Record]] = defaultdict(list)
        full = len(self.mapped)
        if writes and all(len(r.fields) == full for r in writes):
            # Every record has every mapped field (the common case): one shape, told by the
            # length alone instead of a tuple of the keys per record.
            by_fields[tuple(writes[0].fields)] = writes
        else:
            for r in writes:
                by_fields[tuple(r.fields)].append(r)
        for shape, group in by_fields.items():
            fields = tuple(f for f in shape if f != key)
            if mode != "update" and len(group) >= COPY_MIN_ROWS and self._copies(conn):
                new = all(r.op == "added" for r in group)
                if not (new and self._copy_new(conn, fields, group)):
                    self._copy_upsert(conn, mode, fields, group)
                continue
            rows = [{**{f: r.fields[f] for f in fields}, key: self._key_value(r)} for r in group]
            if mode == "update":
                upd = (
                    sa.update(t)
                    .where(t.c[key] == sa.bindparam("_key"))
                    .values({f: sa.bindparam(f) for f in fields})
                )
                conn.execute(upd, [{**row, "_key": row[key]} for row in rows])
                continue
            ins = pg.insert(t)
            if mode == "insert":
                stmt = ins.on_conflict_do_nothing(index_elements=[key])
            elif fields:
                stmt = ins.on_conflict_do_update(
                    index_elements=[key], set_={f: ins.excluded[f] for f in fields}
                )
            else:
                stmt = ins.on_conflict_do_nothing(index_elements=[key])
            conn.execute(stmt, rows)
        return rejected

    @staticmethod
    def _copies(conn: sa.Connection) -> bool:
        """Whether COPY is at hand: the connection is psycopg 3's (`postgresql+psycopg://`)."""
        return isinstance(conn.connection.driver_connection, psycopg.Connection)

    def _write_rows(
        self, copy: psycopg.Copy, cols: list[str], fields: tuple[str, ...], records: list[Record]
    ) -> None:
        assert self.table is not None
        json_cols = {c for c in cols if isinstance(self.table.c[c].type, sa.JSON)}
        if json_cols:
            for r in records:
                values = [self._key_value(r), *(r.fields[f] for f in fields)]
                copy.write_row(
                    [
                        _jsonb(v) if c in json_cols and v is not None else v
                        for c, v in zip(cols, values, strict=True)
                    ]
                )
        else:
            # The hot path, without a call per value: this loop is most of a large batch's
            # Python time. (Only written records get here, whose key is their match value.)
            write = copy.write_row
            if fields:
                pick = operator.itemgetter(*fields)
                if len(fields) == 1:
                    for r in records:
                        write((r.match_value, pick(r.fields)))
                else:
                    for r in records:
                        write((r.match_value, *pick(r.fields)))
            else:
                for r in records:
                    write((r.match_value,))

    def _binary_types(
        self, cols: list[str], fields: tuple[str, ...], records: list[Record]
    ) -> list[str] | None:
        """psycopg's type of each column for a binary COPY of `records`, or None where one
        column's type (or its values, judged by the first that is not null) needs text."""
        types: list[str] = []
        for i, c in enumerate(cols):
            binary = self.binary.get(c)
            if binary is None:
                return None
            values = (
                (r.match_value for r in records)
                if i == 0
                else (r.fields[fields[i - 1]] for r in records)
            )
            first = next((v for v in values if v is not None), None)
            if first is not None and not binary[1](first):
                return None
            types.append(binary[0])
        return types

    def _copy_rows(
        self,
        cur: psycopg.Cursor[Any],
        into: psql.Composable,
        names: psql.Composable,
        cols: list[str],
        fields: tuple[str, ...],
        records: list[Record],
    ) -> None:
        """COPY the records' rows into `into`'s columns `names`: in PostgreSQL's binary format
        where every column's type and values allow it (about twice the rows/s of text:
        BENCHMARKS.md, "PostgreSQL destination"), else as text. A later value the binary
        writer cannot take (another Python type than the column's first) sends them as text."""
        copy_in = psql.SQL("copy {} ({}) from stdin").format(into, names)
        types = self._binary_types(cols, fields, records)
        if types is not None:
            cur.execute("savepoint retl_copy_binary")
            try:
                with cur.copy(copy_in + psql.SQL(" (format binary)")) as copy:
                    copy.set_types(types)
                    self._write_rows(copy, cols, fields, records)
            except (TypeError, ValueError, OverflowError):
                cur.execute("rollback to savepoint retl_copy_binary")
            else:
                cur.execute("release savepoint retl_copy_binary")
                return
        with cur.copy(copy_in) as copy:
            self._write_rows(copy, cols, fields, records)

    def _copy_parts(
        self, conn: sa.Connection, fields: tuple[str, ...]
    ) -> tuple[psycopg.Connection[Any], list[str], psql.Identifier, psql.Composed]:
        """For a COPY of `fields` (and the key): psycopg's connection under SQLAlchemy's, the
        columns, the target table and the column list, quoted."""
        assert self.table is not None
        cols = [self.key, *fields]
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        target = psql.Identifier(*(self.table.schema or "public", self.table.name))
        names = psql.SQL(", ").join(psql.Identifier(c) for c in cols)
        return raw, cols, target, names

    def _copy_new(
        self, conn: sa.Connection, fields: tuple[str, ...], records: list[Record]
    ) -> bool:
        """Rows new to the sync (all `added`: a first run, or rows that joined the model):
        COPY them straight into the target, under a savepoint. False, with nothing written,
        when the table already holds one of their keys (after a reset, or rows written by
        someone else): the caller then merges them. Half the writes of a merge (BENCHMARKS.md,
        "PostgreSQL destination")."""
        raw, cols, target, names = self._copy_parts(conn, fields)
        # SQL savepoints, not psycopg's transaction(): SQLAlchemy owns the batch's
        # transaction, and the first statement here may be the one that begins it.
        with raw.cursor() as cur:
            cur.execute("savepoint retl_copy_new")
            try:
                self._copy_rows(cur, target, names, cols, fields, records)
            except psycopg.errors.UniqueViolation:
                cur.execute("rollback to savepoint retl_copy_new")
                return False
            cur.execute("release savepoint retl_copy_new")
        return True

    def _copy_upsert(
        self, conn: sa.Connection, mode: str, fields: tuple[str, ...], records: list[Record]
    ) -> None:
        """Many rows: COPY them into a temporary table shaped like the target's columns (no
        constraints), then one INSERT ... SELECT ... ON CONFLICT, in the batch's transaction.
        About 10x the rows/s of a multi-row INSERT (BENCHMARKS.md, "PostgreSQL destination")."""
        raw, cols, target, names = self._copy_parts(conn, fields)
        tmp = psql.Identifier(f"_retl_in_{secrets.token_hex(4)}")
        with raw.cursor() as cur:
            cur.execute(
                psql.SQL("create temp table {} on commit drop as select {} from {} limit 0").format(
                    tmp, names, target
                )
            )
            self._copy_rows(cur, tmp, names, cols, fields, records)
            conflict: psql.Composable
            if mode == "insert" or not fields:
                conflict = psql.SQL("do nothing")
            else:
                conflict = psql.SQL("do update set {}").format(
                    psql.SQL(", ").join(
                        psql.SQL("{} = excluded.{}").format(psql.Identifier(f), psql.Identifier(f))
                        for f in fields
                    )
                )
            cur.execute(
                psql.SQL("insert into {} ({}) select {} from {} on conflict ({}) {}").format(
                    target, names, names, tmp, psql.Identifier(self.key), conflict
                )
            )

    def close(self) -> None:
        self.engine.dispose()
