"""Snowflake as the warehouse: the same `Warehouse` methods, the same SQL, run by Snowflake.

`RETL_WAREHOUSE=snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE`
(snowflake-sqlalchemy's URL form; only SQLAlchemy's URL parser is used). Every other query
parameter goes to the Snowflake connector as is: `host`, `port` and `protocol` (an emulator),
`authenticator` and `token` (programmatic access tokens), `private_key_file` and
`private_key_file_pwd` (key-pair authentication), timeouts. `${NAME}` anywhere in the URL is
read from the environment when the warehouse is opened.

The diff, state and logs stay in SQL inside Snowflake; Python streams the rows a run sends as
Arrow batches (`fetch_arrow_batches`). What differs from DuckDB and PostgreSQL:

- Identifiers. Snowflake stores unquoted names upper case; retl writes names as the YAML
  spells them (lower case) and quotes them. The session sets `QUOTED_IDENTIFIERS_IGNORE_CASE`
  so `"user_id"` finds `USER_ID` (a dbt model's column) and `_retl."x__state"` is
  `_RETL.X__STATE`; result columns named all in upper case come back lower case.
- `CREATE SCHEMA` makes the new schema the session's current one: the URL's schema is made
  current again after it, so a model's unqualified names keep their meaning.
- Batch outcomes (`register_arrow`) go into a temporary table with one INSERT ... SELECT over
  `FLATTEN(PARSE_JSON(?))` of the batch: one statement and one bound value however many rows,
  the same on Snowflake and its emulator (array binding stages through PUT past a size on
  Snowflake, and runs row by row on fakesnow).
- State is written with UPDATE ... FROM and INSERT ... WHERE NOT EXISTS in the commit's one
  transaction (`upsert`), not MERGE: fakesnow runs MERGE through a temporary table it cannot
  create inside a transaction. One run per sync writes a sync's state, so the two statements
  see no concurrent writer of the same keys.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from retl_dagster.common.settings import expand_env_refs, safe_location
from retl_dagster.engine.warehouse import Warehouse, WarehouseError, quote_ident

# Connector arguments that are numbers or booleans (a URL's query holds only text).
_INT_ARGS = frozenset(
    {"port", "login_timeout", "network_timeout", "socket_timeout", "client_prefetch_threads"}
)
_BOOL_ARGS = frozenset(
    {"insecure_mode", "client_session_keep_alive", "validate_default_parameters"}
)
_CREATE_SCHEMA = re.compile(r"^\s*create\s+(or\s+replace\s+)?schema\b", re.IGNORECASE)
# DDL that changes nothing the second time: run once per session (each is a round trip, and
# `_retl`'s tables are ensured several times a run).
_IDEMPOTENT_DDL = re.compile(
    r"^\s*(create\s+(schema|table)\s+if\s+not\s+exists|alter\s+table\s+\S+\s+add\s+column"
    r"\s+if\s+not\s+exists)\b",
    re.IGNORECASE,
)
MAX_JSON_CHARS = 4_000_000
"""Batch outcomes bound as one JSON text per INSERT stay below this (Snowflake's text values
are limited in size); a larger batch takes several INSERTs."""

# The connector's type codes (snowflake.connector.constants.FIELD_TYPES), as DDL types.
_DDL_TYPES = {
    1: "FLOAT",
    2: "VARCHAR",
    3: "DATE",
    4: "TIMESTAMP_NTZ",
    5: "VARIANT",
    6: "TIMESTAMP_LTZ",
    7: "TIMESTAMP_TZ",
    8: "TIMESTAMP_NTZ",
    9: "OBJECT",
    10: "ARRAY",
    11: "BINARY",
    12: "TIME",
    13: "BOOLEAN",
}


def _arg(name: str, value: str) -> Any:
    if name in _INT_ARGS and value.isdigit():
        return int(value)
    if name in _BOOL_ARGS and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def connect_args(location: str) -> dict[str, Any]:
    """The Snowflake connector's arguments for a `snowflake://` URL (secrets from `${ENV}`)."""
    try:
        url = sa.engine.make_url(expand_env_refs(location))
    except sa.exc.ArgumentError as exc:
        raise WarehouseError(
            f"RETL_WAREHOUSE is not a valid URL ({exc}). Fix: use "
            "snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE"
        ) from exc
    path = [p for p in (url.database or "").split("/") if p]
    if not url.host or not url.username or len(path) != 2:
        raise WarehouseError(
            f"RETL_WAREHOUSE {safe_location(location)} must name the account, the user, the "
            "database and the schema. Fix: use "
            "snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE"
        )
    args: dict[str, Any] = {
        "account": url.host,
        "user": url.username,
        "database": path[0],
        "schema": path[1],
    }
    if url.password:
        args["password"] = url.password
    for key, value in url.query.items():
        text = value[-1] if isinstance(value, tuple) else value
        args[key] = _arg(key, text)
    return args


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _lower_folded(name: str) -> str:
    """A name Snowflake upper-cased (unquoted, or quoted under QUOTED_IDENTIFIERS_IGNORE_CASE)
    as retl spells it: lower case. Names with lower-case letters were quoted on purpose."""
    return name.lower() if name == name.upper() else name


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _sf_type_of(arrow: pa.DataType) -> str:
    if pa.types.is_boolean(arrow):
        return "BOOLEAN"
    if pa.types.is_integer(arrow):
        return "NUMBER(38,0)"
    if pa.types.is_floating(arrow):
        return "FLOAT"
    if pa.types.is_timestamp(arrow):
        return "TIMESTAMP_TZ"
    return "VARCHAR"


class SnowflakeWarehouse(Warehouse):
    """Snowflake through its Python connector (Arrow result batches, server-side SQL)."""

    dialect = "snowflake"
    default_schema = "PUBLIC"
    names_fold_case = True
    hash_type = "varchar"
    """HASH() is a signed 64-bit number on Snowflake and an unsigned one on fakesnow: as text
    both are the same stable value on one warehouse (diff.row_hash_sql)."""
    single_writer = False
    """Snowflake takes concurrent writers; only a sync's own runs are one at a time."""

    def __init__(
        self,
        location: str | None = None,
        memory_limit: str | None = None,
        read_only: bool = False,
        lock_wait_s: float | None = None,
    ) -> None:
        super().__init__(location, memory_limit, read_only, lock_wait_s)
        self.args = connect_args(self.location)
        self.default_schema = str(self.args["schema"])
        self._sf: Any = None
        self._registered: dict[str, str] = {}
        self._done_ddl: set[str] = set()

    # -- connection -----------------------------------------------------------------------
    @property
    def sf(self) -> Any:
        if self._sf is None:
            import snowflake.connector

            try:
                self._sf = snowflake.connector.connect(
                    **self.args,
                    # Quoted names resolve as unquoted ones do (upper case): see the module.
                    session_parameters={"QUOTED_IDENTIFIERS_IGNORE_CASE": True},
                    paramstyle="qmark",
                    autocommit=True,
                    # Exact decimals, as DuckDB and PostgreSQL hand out NUMBER(p, s>0).
                    arrow_number_to_decimal=True,
                )
            except snowflake.connector.errors.Error as exc:
                raise WarehouseError(
                    f"cannot connect to the warehouse {safe_location(self.location)}: "
                    f"{self._message(exc)}"
                ) from None
        return self._sf

    def open(self) -> None:
        self.sf  # noqa: B018

    def __enter__(self) -> Warehouse:
        self.open()
        return self

    def close(self) -> None:
        if self._sf is not None:
            try:
                self._sf.close()
            finally:
                self._sf = None
                self._registered.clear()
                self._done_ddl.clear()

    @property
    def con(self) -> Any:
        raise WarehouseError("SnowflakeWarehouse has no DuckDB connection; use its methods")

    @staticmethod
    def _message(exc: BaseException) -> str:
        # The connector's message, without the URL or arguments (no secret is in it).
        return str(getattr(exc, "msg", None) or exc).strip()

    # -- dialect --------------------------------------------------------------------------
    @staticmethod
    def days_ago(days: int) -> str:
        return f"dateadd(day, -{int(days)}, current_timestamp())"

    def upsert(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        select_sql: str,
        params: Sequence[Any],
        updates: Callable[[str, str], Mapping[str, str]],
    ) -> None:
        sets = ", ".join(f"{c} = {e}" for c, e in updates("_retl_old", "_retl_new").items())
        self.execute(
            f"update {table} as _retl_old set {sets} from ({select_sql}) as _retl_new "
            f"where _retl_old.{key} = _retl_new.{key}",
            params,
        )
        names = ", ".join(columns)
        self.execute(
            f"insert into {table} ({names}) select {names} from ({select_sql}) as _retl_new "
            f"where not exists (select 1 from {table} as _retl_old "
            f"where _retl_old.{key} = _retl_new.{key})",
            params,
        )

    # -- statements -----------------------------------------------------------------------
    def _run(self, sql: str, params: Sequence[Any] | None) -> Any:
        import snowflake.connector

        cur = self.sf.cursor()
        try:
            cur.execute(sql, [_plain(p) for p in params] if params else None)
            if _CREATE_SCHEMA.match(sql):
                # Snowflake makes a new schema the current one; the model's names are the URL's.
                cur.execute(f"use schema {self.args['database']}.{self.default_schema}")
        except snowflake.connector.errors.Error as exc:
            cur.close()
            raise WarehouseError(self._message(exc)) from None
        return cur

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        once = not params and _IDEMPOTENT_DDL.match(sql) is not None
        if once and sql in self._done_ddl:
            return
        self._run(sql, params).close()
        if once:
            self._done_ddl.add(sql)

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self._run(sql, params)
        try:
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("begin")
        try:
            yield
        except BaseException:
            self.execute("rollback")
            raise
        self.execute("commit")

    def stream(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result in Arrow record batches of at most `batch_size` rows, as the
        connector downloads its result chunks (Python holds one chunk at a time). Writes
        through `self` while it reads are fine: the result is already the server's."""
        cur = self._run(sql, params)
        try:
            names = [_lower_folded(d.name) for d in cur.description or []]
            for table in cur.fetch_arrow_batches():
                table = table.rename_columns(names)
                yield from table.to_batches(max_chunksize=batch_size)
        finally:
            cur.close()

    def register_arrow(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        """A temporary table holding `table`'s rows, filled by one INSERT ... SELECT over the
        rows as one JSON array (see the module). Temporary tables live in the session's
        current schema (fakesnow creates them nowhere else), so `name` stays unqualified."""
        cols = [(f.name, _sf_type_of(f.type)) for f in table.schema]
        signature = ", ".join(f"{quote_ident(n)} {t}" for n, t in cols)
        if self._registered.get(name) != signature:
            self.execute(f"create or replace temporary table {quote_ident(name)} ({signature})")
            self._registered[name] = signature
        else:
            self.execute(f"delete from {quote_ident(name)}")
        if not table.num_rows:
            return
        picks = ", ".join(f"value[{i}]::{t}" for i, (_, t) in enumerate(cols))
        insert = (
            f"insert into {quote_ident(name)} select {picks} "
            "from table(flatten(input => parse_json(?)))"
        )
        chunk: list[str] = []
        size = 0
        for row in table.to_pylist():
            text = json.dumps([_json_value(v) for v in row.values()], separators=(",", ":"))
            if chunk and size + len(text) > MAX_JSON_CHARS:
                self.execute(insert, ["[" + ",".join(chunk) + "]"])
                chunk, size = [], 0
            chunk.append(text)
            size += len(text) + 1
        self.execute(insert, ["[" + ",".join(chunk) + "]"])

    def unregister(self, name: str) -> None:
        # The temporary table is kept (emptied at the next register) to save DDL round trips;
        # it goes with the session.
        return None

    def columns_of(self, select_sql: str) -> list[tuple[str, str]]:
        """(name, DDL type) of each column a SELECT returns, described without its rows."""
        import snowflake.connector
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        try:
            meta = self.sf.cursor().describe(f"select * from ({select_sql}) as _retl_probe limit 0")
        except snowflake.connector.errors.Error as exc:
            raise WarehouseError(self._message(exc)) from None
        out = []
        for d in meta or []:
            if d.type_code == 0:  # FIXED
                type_ = f"NUMBER({d.precision or 38},{d.scale or 0})"
            else:
                type_ = _DDL_TYPES.get(d.type_code) or FIELD_ID_TO_NAME.get(d.type_code, "VARIANT")
            out.append((_lower_folded(d.name), type_))
        return out
