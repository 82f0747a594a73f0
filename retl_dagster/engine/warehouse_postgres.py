"""PostgreSQL as the warehouse: the same `Warehouse` methods, the same SQL, run by PostgreSQL.

The diff, state and logs stay in SQL inside PostgreSQL; Python only streams the rows a run
sends, in Arrow record batches read through a server-side cursor (one batch in memory).

SQLAlchemy parses the URL and opens the connection (`postgresql+psycopg://...`, the form other
SQLAlchemy warehouses would take too); the work goes through psycopg's own connection, because
COPY and named server-side cursors are what make bulk writes and bounded reads cheap.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import sqlalchemy as sa
from psycopg.types.json import set_json_loads

from retl_dagster.common.settings import expand_env_refs, safe_location
from retl_dagster.engine.warehouse import Warehouse, WarehouseError

# `?` placeholders (the engine's, shared with DuckDB) outside quotes; every `%` is doubled
# because psycopg reads `%s` placeholders even inside string literals.
_TOKENS = re.compile(r"""('(?:[^']|'')*')|("(?:[^"]|"")*")|(\?)|(%)""")

# PostgreSQL type (as `format_type` writes it) -> the Arrow type its values stream as.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "smallint": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "real": pa.float64(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "text": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "uuid": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")


def to_pyformat(sql: str) -> str:
    def swap(m: re.Match[str]) -> str:
        if m.group(3):
            return "%s"
        if m.group(4):
            return "%%"
        return m.group(0).replace("%", "%%")

    return _TOKENS.sub(swap, sql)


def arrow_type(pg_type: str) -> pa.DataType | None:
    """The Arrow type for a PostgreSQL column, or None to let Arrow infer it from the values."""
    if pg_type in _ARROW_TYPES:
        return _ARROW_TYPES[pg_type]
    if pg_type.startswith(("character varying", "character(", "character")):
        return pa.string()
    m = _NUMERIC.fullmatch(pg_type.replace(" ", ""))
    if m and int(m.group(1)) <= 38:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _column(values: list[Any], type_: pa.DataType | None) -> pa.Array:
    values = [_plain(v) for v in values]
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Values Arrow cannot type as one column (mixed, or numbers past decimal128): text.
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _pg_type_of(arrow: pa.DataType) -> str:
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_integer(arrow):
        return "bigint"
    if pa.types.is_floating(arrow):
        return "double precision"
    if pa.types.is_timestamp(arrow):
        return "timestamptz"
    return "text"


class PostgresWarehouse(Warehouse):
    """PostgreSQL through SQLAlchemy's URL and psycopg's connection."""

    dialect = "postgresql"
    default_schema = "public"
    hash_type = "varchar"  # md5 text (diff.row_hash_sql)
    single_writer = False  # MVCC: runs write side by side; no pool serialises them

    def __init__(
        self,
        location: str | None = None,
        memory_limit: str | None = None,
        read_only: bool = False,
        lock_wait_s: float | None = None,
    ) -> None:
        super().__init__(location, memory_limit, read_only, lock_wait_s)
        try:
            self.url = sa.engine.make_url(expand_env_refs(self.location))
        except sa.exc.ArgumentError as exc:
            raise WarehouseError(
                f"RETL_WAREHOUSE is not a valid URL ({exc}). Fix: use "
                "postgresql+psycopg://user:password@host:5432/database"
            ) from exc
        if self.url.get_backend_name() != "postgresql":
            raise WarehouseError(
                f"RETL_WAREHOUSE names a {self.url.get_backend_name()} warehouse; DuckDB files "
                "and PostgreSQL (postgresql+psycopg://...) are supported. Fix: point it at one"
            )
        # psycopg is the driver whatever the URL names (+psycopg2 etc.): its COPY and cursors.
        self.url = self.url.set(drivername="postgresql+psycopg")
        self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        self._pg: psycopg.Connection[Any] | None = None
        self._registered: set[str] = set()
        self._proxies: dict[int, Any] = {}

    # -- connection -----------------------------------------------------------------------
    def _new_connection(self, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            raw = self._engine.raw_connection()
        except sa.exc.OperationalError as exc:
            raise WarehouseError(
                f"cannot connect to the warehouse {safe_location(self.location)}: {exc.orig}"
            ) from exc
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        # The pool's proxy closes the connection when it is garbage-collected: keep it.
        self._proxies[id(conn)] = raw
        conn.autocommit = autocommit
        # Client-side binding: parameters become literals, so PostgreSQL never has to guess a
        # parameter's type (e.g. in a UNION), and they may sit anywhere a literal may.
        conn.cursor_factory = psycopg.ClientCursor
        # JSON stays text, as DuckDB hands out JSON columns: the mapper parses it when a
        # mapping reads into it, and the diff's rows stream as strings.
        set_json_loads(lambda b: b if isinstance(b, str) else bytes(b).decode(), conn)
        if self.read_only:
            conn.execute("set session characteristics as transaction read only")
        return conn

    @property
    def pg(self) -> psycopg.Connection[Any]:
        if self._pg is None:
            self._pg = self._new_connection(autocommit=True)
        return self._pg

    def open(self) -> None:
        self.pg  # noqa: B018

    def __enter__(self) -> Warehouse:
        self.open()
        return self

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        proxy = self._proxies.pop(id(conn), None)
        if proxy is not None:
            proxy.close()

    def close(self) -> None:
        if self._pg is not None:
            self._release(self._pg)
            self._pg = None
        self._engine.dispose()

    @property
    def con(self) -> Any:
        raise WarehouseError("PostgresWarehouse has no DuckDB connection; use its methods")

    # -- statements -----------------------------------------------------------------------
    def _run(self, sql: str, params: Sequence[Any] | None) -> psycopg.Cursor[Any]:
        args = [_plain(p) for p in params] if params else None
        try:
            return self.pg.execute(to_pyformat(sql) if args else sql, args)
        except psycopg.Error as exc:
            # Keep PostgreSQL's own words; the callers add what the statement was for.
            raise WarehouseError(str(exc).strip()) from exc

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self._run(sql, params)

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._run(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        return self._run(sql, params).fetchone()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.pg.transaction():
            yield

    def stream(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result in Arrow record batches from a server-side cursor.

        Reads on a second connection: its read transaction stays open while the caller
        commits each batch's outcome through `self`, and those commits must be real ones.
        """
        conn = self._new_connection(autocommit=False)
        try:
            cur = conn.cursor(name=f"retl_stream_{secrets.token_hex(4)}")
            cur.itersize = batch_size
            args = [_plain(p) for p in params] if params else None
            cur.execute(to_pyformat(sql) if args else sql, args)
            names = [d.name for d in cur.description or []]
            types = self._types_of(conn, cur)
            while rows := cur.fetchmany(batch_size):
                columns = list(zip(*rows, strict=True))
                yield pa.record_batch(
                    [_column(list(c), t) for c, t in zip(columns, types, strict=True)],
                    names=names,
                )
            cur.close()
        finally:
            conn.rollback()
            self._release(conn)

    @staticmethod
    def _pg_types(conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> list[str]:
        """The PostgreSQL type of each result column (numerics with precision and scale)."""
        oids = [d.type_code for d in cur.description or []]
        if not oids:
            return []
        names = dict(
            conn.execute(
                "select oid, format_type(oid, null) from pg_type where oid = any(%s)", [oids]
            ).fetchall()
        )
        out = []
        for d in cur.description or []:
            pg_type = str(names.get(d.type_code, "text"))
            if pg_type == "numeric" and d.precision is not None and d.scale is not None:
                pg_type = f"numeric({d.precision},{d.scale})"
            out.append(pg_type)
        return out

    @classmethod
    def _types_of(cls, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> list[Any]:
        return [arrow_type(t) for t in cls._pg_types(conn, cur)]

    def register_arrow(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        """A temporary table holding `table`'s rows (COPY), readable by name like DuckDB's
        registered Arrow views."""
        cols = ", ".join(f'"{f.name}" {_pg_type_of(f.type)}' for f in table.schema)
        self.pg.execute(f'create temporary table if not exists "{name}" ({cols})')
        self.pg.execute(f'truncate "{name}"')
        names = ", ".join(f'"{f.name}"' for f in table.schema)
        with self.pg.cursor().copy(f'copy "{name}" ({names}) from stdin') as copy:
            for row in table.to_pylist():
                copy.write_row(list(row.values()))
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        if name in self._registered:
            self.pg.execute(f'drop table if exists "{name}"')
            self._registered.discard(name)

    def columns_of(self, select_sql: str) -> list[tuple[str, str]]:
        """(name, type) of each column a SELECT returns, from a query that returns no rows
        (no DDL, so it works on a read-only connection too)."""
        try:
            cur = self.pg.execute(f"select * from ({select_sql}) as _retl_probe limit 0")
            types = self._pg_types(self.pg, cur)
        except psycopg.Error as exc:
            raise WarehouseError(str(exc).strip()) from exc
        return [(d.name, t) for d, t in zip(cur.description or [], types, strict=True)]

    @contextmanager
    def ddl_lock(self) -> Iterator[None]:
        # Two runs creating `_retl` at once race in the catalog even with IF NOT EXISTS.
        with self.transaction():
            self.execute("select pg_advisory_xact_lock(hashtext('retl_dagster ddl'))")
            yield

    def replace_view(self, name: str, select_sql: str) -> None:
        # PostgreSQL's CREATE OR REPLACE VIEW refuses a changed column list or type.
        with self.transaction():
            self.execute(f"drop view if exists {name}")
            self.execute(f"create view {name} as {select_sql}")
