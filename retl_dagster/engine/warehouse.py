"""Warehouse access: one small surface the diff, state and load stages share.

DuckDB is the default (a file). `RETL_WAREHOUSE=postgresql+psycopg://...` runs the same SQL in
PostgreSQL (`warehouse_postgres.py`), `snowflake://...` in Snowflake (`warehouse_snowflake.py`).
The stages write one SQL that all accept (placeholders are `?`, `current_timestamp`); the few
places the dialects differ are methods here (`replace_view`, `days_ago`, `upsert`) and
`diff.row_hash_sql`. docs/WAREHOUSES.md is the interface and how to add a warehouse.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import tenacity

from retl_dagster.common.settings import is_url, warehouse_location


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_relation(name: str) -> str:
    """`schema.table` -> `"schema"."table"`; names already quoted are left alone."""
    if '"' in name:
        return name
    return ".".join(quote_ident(p) for p in name.split("."))


class WarehouseError(RuntimeError):
    """The warehouse refused a statement; the message carries the SQL's purpose."""


class WarehouseBusy(WarehouseError):
    """Another process held the DuckDB file's write lock for longer than we wait."""


LOCK_WAIT_ENV = "RETL_LOCK_WAIT_S"
DEFAULT_LOCK_WAIT_S = 120.0
LOCK_WAIT_NOTICE_S = 1.0
_HOLDER = re.compile(r"held in (.+?) \(PID (\d+)\)")
log = logging.getLogger("retl.warehouse")


def default_lock_wait_s() -> float:
    """How long to wait for another process's write lock (`RETL_LOCK_WAIT_S`, default 120 s)."""
    try:
        return max(0.0, float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_S)))
    except ValueError:
        return DEFAULT_LOCK_WAIT_S


def lock_holder(exc: BaseException) -> str | None:
    """Which process holds the lock, when DuckDB says (`/usr/bin/python3 (PID 1234)`)."""
    m = _HOLDER.search(str(exc))
    return f"{m.group(1)} (PID {m.group(2)})" if m else None


def _is_lock_error(exc: BaseException) -> bool:
    # Another process holds DuckDB's single write lock on the file (e.g. a concurrent sync).
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class Warehouse:
    """A DuckDB warehouse file opened for one stage of one run.

    `Warehouse()` opens the one `RETL_WAREHOUSE` names: a URL gives a `PostgresWarehouse`
    (same methods), so no stage needs to know which it has.

    Open it inside a run only: definitions never touch the warehouse, and DuckDB allows a
    single writing process per file.
    """

    dialect = "duckdb"
    default_schema = "main"
    hash_type = "ubigint"
    """The type of a row hash (diff.row_hash_sql) as the state keeps it."""
    names_fold_case = False
    """True where unquoted names are stored upper-cased (Snowflake)."""
    single_writer = True
    """One writing process at a time (DuckDB locks its file): a long stage must not keep the
    connection open (`detached_stream`), and Dagster steps that write share one pool."""

    def __new__(
        cls,
        location: str | None = None,
        memory_limit: str | None = None,
        read_only: bool = False,
        lock_wait_s: float | None = None,
    ) -> Warehouse:
        # Like pathlib.Path: the base class picks the implementation from the location.
        location = location or warehouse_location()
        if cls is Warehouse and location.split("://", 1)[0].lower().startswith("snowflake"):
            from retl_dagster.engine.warehouse_snowflake import SnowflakeWarehouse

            return super().__new__(SnowflakeWarehouse)
        if cls is Warehouse and is_url(location):
            from retl_dagster.engine.warehouse_postgres import PostgresWarehouse

            return super().__new__(PostgresWarehouse)
        return super().__new__(cls)

    def __init__(
        self,
        location: str | None = None,
        memory_limit: str | None = None,
        read_only: bool = False,
        lock_wait_s: float | None = None,
    ) -> None:
        self.location = location or warehouse_location()
        self.read_only = read_only
        self.lock_wait_s = lock_wait_s if lock_wait_s is not None else default_lock_wait_s()
        """How long to wait for another process's write lock on the DuckDB file (a sensor
        polling the warehouse waits briefly and tries again at its next tick)."""
        # DuckDB's hash joins spill to disk past this, which keeps a large diff's memory bounded.
        self.memory_limit = memory_limit or os.environ.get("RETL_DUCKDB_MEMORY_LIMIT", "2GB")
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- connection -----------------------------------------------------------------------
    def _connect(self) -> duckdb.DuckDBPyConnection:
        warned = False

        def waiting(state: tenacity.RetryCallState) -> None:
            # Say so once the wait is long enough to notice (another sync's commit holds the
            # file for tens of milliseconds; a diff or a notebook for longer).
            nonlocal warned
            if not warned and state.idle_for >= LOCK_WAIT_NOTICE_S and state.outcome is not None:
                warned = True
                holder = lock_holder(state.outcome.exception() or Exception())
                log.warning(
                    "the warehouse %s is locked by %s; waiting up to %.0f s (%s)",
                    self.location,
                    holder or "another process",
                    self.lock_wait_s,
                    LOCK_WAIT_ENV,
                )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_lock_error),
            # Short waits first: another sync's commit holds the file for tens of milliseconds.
            wait=tenacity.wait_exponential_jitter(initial=0.01, max=1, jitter=0.02),
            stop=tenacity.stop_after_delay(self.lock_wait_s),
            before_sleep=waiting,
            reraise=True,
        )
        try:
            return retrying(self._connect_once)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            holder = lock_holder(exc)
            raise WarehouseBusy(
                f"the warehouse {self.location} is locked by "
                f"{holder or 'another process'} (DuckDB allows one writer per file); waited "
                f"{self.lock_wait_s:.0f} s. Fix: close that process's connection (a notebook or "
                f"a running sync), or wait longer with {LOCK_WAIT_ENV}=<seconds>"
            ) from None

    def _connect_once(self) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.location, read_only=self.read_only)
        con.execute(f"SET memory_limit='{self.memory_limit}'")
        con.execute("SET preserve_insertion_order=false")
        con.execute("SET enable_progress_bar=false")  # it would write into our logs
        return con

    def __enter__(self) -> Warehouse:
        self._con = self._connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def open(self) -> None:
        """Connect now (to learn early whether the warehouse is reachable)."""
        self.con  # noqa: B018

    # -- dialect --------------------------------------------------------------------------
    @staticmethod
    def days_ago(days: int) -> str:
        """SQL for the instant `days` days before now (both dialects)."""
        return f"(current_timestamp - interval '1 day' * {int(days)})"

    def upsert(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        select_sql: str,
        params: Sequence[Any],
        updates: Callable[[str, str], Mapping[str, str]],
    ) -> None:
        """Insert `select_sql`'s rows (its columns named `columns`) into `table`; a row whose
        `key` is there already updates it instead: `updates(old, new)` gives each column's new
        value, an expression over `old.<column>` (the stored row) and `new.<column>`."""
        sets = ", ".join(f"{c} = {e}" for c, e in updates(table, "excluded").items())
        self.execute(
            f"insert into {table} ({', '.join(columns)}) {select_sql} "
            f"on conflict ({key}) do update set {sets}",
            params,
        )

    def replace_view(self, name: str, select_sql: str) -> None:
        self.execute(f"create or replace view {name} as {select_sql}")

    @contextmanager
    def ddl_lock(self) -> Iterator[None]:
        """Serialises schema changes between runs: a no-op for DuckDB, whose file has a
        single writer anyway."""
        yield

    # -- statements -----------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.con.execute(sql, params or [])

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        # fetchall: DuckDB 2.0 keeps a partly fetched result open and refuses further work.
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def stream(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result in Arrow record batches; Python holds one batch at a time.

        Runs on its own cursor so the caller may write through `self` while it reads.
        """
        cur = self.con.cursor()
        try:
            # The relation API streams; a DB-API result would copy every row first.
            reader = cur.sql(sql, params=list(params or [])).to_arrow_reader(batch_size)
            yield from reader
        finally:
            cur.close()

    def detached_stream(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        """Like `stream`, but holding no connection while the caller works on the batches.

        DuckDB: the result is spooled to an Arrow IPC file beside the warehouse and the
        connection closed before the first batch is yielded, so other processes can open the
        file while this one delivers; the next statement through `self` reconnects (waiting for
        the lock like any open). A warehouse with many writers (`single_writer` False) or an
        in-memory one streams directly.
        """
        if not self.single_writer or self.location == ":memory:":
            yield from self.stream(sql, params, batch_size)
            return
        fd, name = tempfile.mkstemp(
            prefix=".retl-spool-", suffix=".arrow", dir=Path(self.location).parent
        )
        os.close(fd)
        try:
            cur = self.con.cursor()
            try:
                reader = cur.sql(sql, params=list(params or [])).to_arrow_reader(batch_size)
                with pa.OSFile(name, "wb") as sink, pa.ipc.new_stream(sink, reader.schema) as out:
                    for batch in reader:
                        out.write_batch(batch)
            finally:
                cur.close()
            self.close()
            with pa.memory_map(name) as source:
                yield from pa.ipc.open_stream(source)
        finally:
            os.unlink(name)

    def register_arrow(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def relation_exists(self, relation: str) -> bool:
        parts = relation.replace('"', "").split(".")
        schema, table = (
            (parts[-2], parts[-1]) if len(parts) > 1 else (self.default_schema, parts[0])
        )
        # Snowflake folds unquoted names to upper case: compare names as it would.
        name = "upper({})" if self.names_fold_case else "{}"
        row = self.fetchone(
            "select count(*) from information_schema.tables where "
            f"{name.format('table_schema')} = {name.format('?')} and "
            f"{name.format('table_name')} = {name.format('?')}",
            [schema, table],
        )
        return bool(row and row[0])

    def columns_of(self, select_sql: str) -> list[tuple[str, str]]:
        """(name, type) of each column a SELECT returns, without running it."""
        rel = self.con.sql(f"select * from ({select_sql}) as _retl_probe limit 0")
        return [(n, str(t)) for n, t in zip(rel.columns, rel.types, strict=True)]
