"""Warehouse access: one small surface the diff, state and load stages share.

DuckDB is the default (a file). The engine talks to it through `Warehouse` so a SQLAlchemy
warehouse can slot in behind the same methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import tenacity

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STATE_SCHEMA = "_retl"


def data_dir() -> Path:
    """Where local files live (`RETL_DATA_DIR`, default `<project>/data`, git-ignored)."""
    return Path(os.environ.get("RETL_DATA_DIR") or PROJECT_ROOT / "data")


def warehouse_location() -> str:
    """`RETL_WAREHOUSE` (a DuckDB path or SQLAlchemy URL), else `<data dir>/warehouse.duckdb`."""
    return os.environ.get("RETL_WAREHOUSE") or str(data_dir() / "warehouse.duckdb")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_relation(name: str) -> str:
    """`schema.table` -> `"schema"."table"`; names already quoted are left alone."""
    if '"' in name:
        return name
    return ".".join(quote_ident(p) for p in name.split("."))


class WarehouseError(RuntimeError):
    """The warehouse refused a statement; the message carries the SQL's purpose."""


def _is_lock_error(exc: BaseException) -> bool:
    # Another process holds DuckDB's single write lock on the file (e.g. a concurrent sync).
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class Warehouse:
    """A DuckDB warehouse file opened for one stage of one run.

    Open it inside a run only: definitions never touch the warehouse, and DuckDB allows a
    single writing process per file.
    """

    dialect = "duckdb"

    def __init__(
        self, location: str | None = None, memory_limit: str | None = None, read_only: bool = False
    ) -> None:
        self.location = location or warehouse_location()
        self.read_only = read_only
        if "://" in self.location:
            raise WarehouseError(
                f"RETL_WAREHOUSE={self.location!r} is a URL; only DuckDB files are supported "
                "so far. Fix: point RETL_WAREHOUSE at a .duckdb file"
            )
        # DuckDB's hash joins spill to disk past this, which keeps a large diff's memory bounded.
        self.memory_limit = memory_limit or os.environ.get("RETL_DUCKDB_MEMORY_LIMIT", "2GB")
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- connection -----------------------------------------------------------------------
    @tenacity.retry(
        retry=tenacity.retry_if_exception(_is_lock_error),
        wait=tenacity.wait_exponential_jitter(initial=0.2, max=5),
        stop=tenacity.stop_after_delay(120),
        reraise=True,
    )
    def _connect(self) -> duckdb.DuckDBPyConnection:
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

    def register_arrow(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def relation_exists(self, relation: str) -> bool:
        parts = relation.replace('"', "").split(".")
        schema, table = (parts[-2], parts[-1]) if len(parts) > 1 else ("main", parts[0])
        row = self.fetchone(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        )
        return bool(row and row[0])

    def columns_of(self, select_sql: str) -> list[tuple[str, str]]:
        """(name, type) of each column a SELECT returns, without running it."""
        rel = self.con.sql(f"select * from ({select_sql}) as _retl_probe limit 0")
        return [(n, str(t)) for n, t in zip(rel.columns, rel.types, strict=True)]
