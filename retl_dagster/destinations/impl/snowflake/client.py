"""Snowflake table destination.

Each batch is staged in bulk and applied in one transaction:

1. Its rows go into a temporary table of the session, typed after the batch's values: a group
   of at least COPY_MIN_ROWS rows as a Parquet file PUT to a temporary stage and loaded with
   `COPY INTO ... FROM (SELECT $1:C0, ... FROM @stage/file)` (what the connector's
   `write_pandas` runs); fewer rows (a record isolated after a refused batch, say) with one
   INSERT ... SELECT over `FLATTEN(PARSE_JSON(?))`, one bound value.
2. `BEGIN`; DELETE the removed keys; `UPDATE target ... FROM staged` (update, upsert, mirror);
   `INSERT INTO target SELECT ... FROM staged WHERE NOT EXISTS (...)` (insert, upsert, mirror);
   `COMMIT`. Not MERGE: the emulator the tests run on (fakesnow) cannot run MERGE inside a
   transaction; UPDATE + INSERT in one transaction is what MERGE does for a batch whose keys
   no other writer touches (a run's batches hold disjoint keys).

Values are converted to the target's column types by those UPDATE and INSERT statements. When
one refuses a value (a data exception, SQLSTATE class 22/23) the transaction is rolled back and
the staged rows are applied in halves (ranges of their row number, without staging again) until
the refused records are alone: only they are rejected, with Snowflake's message. A null in a
NOT NULL column is rejected before anything is sent, in Snowflake's words. Any other error (a
lost connection, a missing privilege) fails the run with nothing of the batch marked synced.

Names: the sync's `object` and mapped fields are read as Snowflake reads unquoted names (upper
case), unless written in double quotes; each is matched against the table's columns as stored
and then quoted, so a column created with a quoted mixed-case name is reached too.

Where the tests' emulator (fakesnow 0.12.1) departs from Snowflake here: a NOT NULL violation is
an HTTP 500 there (hence the screening above is also what keeps the tests from retrying); it does
not enforce VARCHAR(n) lengths; its errors carry DuckDB's texts (SQLSTATE class 22 all the same);
it cannot run MERGE in a transaction nor the connector's own `write_pandas` upload (a plain PUT
works), nor COPY ... MATCH_BY_COLUMN_NAME into a temporary table (the COPY-with-SELECT form used
here works); it keeps quoted names' case and resolves names ignoring case; it has no roles or
grants and shares one DuckDB between sessions (no table locks).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from retl_dagster.common.settings import SECRET_QUERY_KEYS, expand_env_refs
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationConfigError,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.impl.snowflake.config import MAX_CONCURRENCY, SnowflakeConfig
from retl_dagster.destinations.impl.snowflake.exceptions import (
    SnowflakeConnectError,
    SnowflakeDeliveryError,
    SnowflakeSchemaError,
)
from retl_dagster.destinations.impl.snowflake.stage import (
    Staged,
    cast_type,
    column_type,
    ident,
    parse_object,
    stage_column,
    stored_name,
    value_sql,
)

COPY_MIN_ROWS = 50
"""A group of at least this many rows is staged as a Parquet file (PUT + COPY INTO); fewer as
one bound JSON value."""
MAX_JSON_CHARS = 4_000_000
"""Removed keys bound as one JSON text per DELETE stay below this."""
URL_FORM = "snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class _Column:
    name: str
    """As stored (upper case for a name created unquoted)."""
    data_type: str
    """INFORMATION_SCHEMA.COLUMNS.DATA_TYPE: NUMBER, TEXT, VARIANT, TIMESTAMP_TZ..."""
    cast: str
    nullable: bool
    has_default: bool


@dataclass
class _Target:
    fqn: str
    """Quoted database.schema.table."""
    display: str
    key: _Column
    columns: dict[str, _Column]
    """Mapped field -> its column."""
    required: list[str]
    """NOT NULL columns without a default that the sync does not map (an INSERT leaves them
    null)."""


@dataclass
class _Group:
    """Records of one batch with the same fields, staged in one temporary table."""

    table: str
    fields: tuple[str, ...]
    records: list[Record]
    kinds: list[str]


@dataclass
class _Session:
    """A connection with its temporary staging tables (one per column signature) and stage."""

    con: Any
    tables: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    filled: set[str] = field(default_factory=set)
    stage: str | None = None
    broken: bool = False

    def run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.con.cursor()
        try:
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()


def _is_data_error(exc: BaseException) -> bool:
    """A value the statement could not write (conversion, length, not null): SQLSTATE class
    22 (data exception) or 23 (integrity constraint violation)."""
    state = str(getattr(exc, "sqlstate", "") or "")
    return state[:2] in ("22", "23")


def _message(exc: BaseException) -> str:
    """Snowflake's message as its own clients show it (`100038 (22018): Numeric value 'x' is
    not recognized`), without the query id."""
    msg = " ".join(str(getattr(exc, "raw_msg", None) or exc).split())
    errno, state = getattr(exc, "errno", None), getattr(exc, "sqlstate", None)
    if re.match(r"\d{6}\b", msg) or not isinstance(errno, int) or errno <= 0:
        return msg
    return f"{errno:06d} ({state}): {msg}" if state and state != "n/a" else f"{errno:06d}: {msg}"


def _sf_errors() -> type[Exception]:
    import snowflake.connector

    return snowflake.connector.errors.Error


class SnowflakeDestination(Destination[SnowflakeConfig]):
    type: ClassVar[str] = "snowflake"
    config_class = SnowflakeConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = 100_000
    native_values = True
    requires_object = True
    requires_match = frozenset({"insert", "update", "upsert", "mirror"})
    # Each batch in flight has a session of its own (taken from a pool under a lock);
    # `deliver` only reads what `prepare` set.
    max_concurrency = MAX_CONCURRENCY

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        if sync.object and parse_object(sync.object) is None:
            return [
                (
                    "object",
                    f"'{sync.object}' is not a Snowflake table name",
                    "write schema.table or database.schema.table (a part in double quotes "
                    "keeps its case)",
                )
            ]
        return []

    def __init__(self, name: str, config: SnowflakeConfig) -> None:
        super().__init__(name, config)
        if importlib.util.find_spec("snowflake.connector") is None:
            raise DestinationConfigError(
                name,
                "type",
                "the snowflake destination needs the Snowflake connector, which is not installed",
                "pip install 'retl-dagster[snowflake]'",
            )
        self._args = self._connect_args(config.url.get_secret_value())
        self._secrets = [
            str(v)
            for k, v in self._args.items()
            if (k == "password" or k.lower() in SECRET_QUERY_KEYS) and v
        ]
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self.target: _Target | None = None

    # -- connection -------------------------------------------------------------------------
    def _connect_args(self, url: str) -> dict[str, Any]:
        from retl_dagster.engine.warehouse_snowflake import connect_args

        unset = [m.group(1) for m in _ENV_REF.finditer(url) if m.group(1) not in os.environ]
        if unset:
            raise DestinationConfigError(
                self.name,
                "url",
                f"it refers to ${{{unset[0]}}}, which is not set",
                f"export {unset[0]}=... (or put it in the project's .env)",
            )
        expanded = expand_env_refs(url)
        try:
            parsed = sa.engine.make_url(expanded)
        except sa.exc.ArgumentError:
            parsed = None
        path = [p for p in ((parsed.database or "") if parsed else "").split("/") if p]
        if (
            parsed is None
            or parsed.drivername != "snowflake"
            or not parsed.host
            or not parsed.username
            or len(path) != 2
        ):
            raise DestinationConfigError(
                self.name,
                "url",
                "it is not a Snowflake URL naming the account, the user, the database and the "
                "schema",
                f"use {URL_FORM}",
            )
        return connect_args(expanded)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _connect(self) -> _Session:
        import snowflake.connector

        try:
            con = snowflake.connector.connect(
                **self._args,
                session_parameters={
                    # Names are quoted as stored (see the module), whatever the account's
                    # default.
                    "QUOTED_IDENTIFIERS_IGNORE_CASE": False,
                    "QUERY_TAG": f"retl_dagster destination {self.name}",
                },
                paramstyle="qmark",
                autocommit=True,
            )
        except snowflake.connector.errors.Error as exc:
            raise SnowflakeConnectError(
                f"destination '{self.name}': cannot connect to Snowflake account "
                f"{self._args['account']} as {self._args['user']}: {self._redact(_message(exc))}. "
                "Fix: check the url's account, user, password (or authenticator), warehouse "
                "and role"
            ) from None
        return _Session(con)

    @contextmanager
    def _session(self) -> Iterator[_Session]:
        """A session of the pool (a new one past the idle ones); one that failed for another
        reason than a record's value is closed rather than reused."""
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = self._connect()
        try:
            yield session
        except BaseException:
            session.broken = True
            raise
        finally:
            if session.broken:
                with suppress(Exception):
                    session.con.close()
            else:
                with self._lock:
                    self._idle.append(session)

    def _failure(self, exc: BaseException, doing: str) -> SnowflakeDeliveryError:
        return SnowflakeDeliveryError(
            f"destination '{self.name}': Snowflake refused {doing}: {self._redact(_message(exc))}"
        )

    # -- the table ----------------------------------------------------------------------------
    def _parts(self, object_: str) -> tuple[str, str, str]:
        parts = parse_object(object_)
        if parts is None:  # check_sync refuses it first
            raise SnowflakeSchemaError(f"destination '{self.name}': bad object '{object_}'")
        if len(parts) == 3:
            return parts[0], parts[1], parts[2]
        return str(self._args["database"]), parts[0], parts[1]

    @staticmethod
    def _columns(session: _Session, db: str, schema: str, table: str) -> list[_Column]:
        rows = session.run(
            "select column_name, data_type, is_nullable, column_default, numeric_precision, "
            f"numeric_scale from {ident(db)}.information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, table],
        )
        return [
            _Column(
                str(name),
                str(data_type),
                cast_type(str(data_type), precision, scale),
                str(nullable).upper() == "YES",
                default is not None,
            )
            for name, data_type, nullable, default, precision, scale in rows
        ]

    @staticmethod
    def _resolve(name: str, columns: dict[str, _Column]) -> _Column | None:
        """The column a mapped field names: as written, else as Snowflake reads it unquoted,
        else the one column equal to it ignoring case."""
        for candidate in (name, stored_name(name)):
            if candidate in columns:
                return columns[candidate]
        folded = [c for n, c in columns.items() if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        assert object_ and match_field and match_type  # check_sync guarantees them
        errors = _sf_errors()
        with self._session() as session:
            db, schema, table = self._parts(object_)
            fqn = ".".join(ident(p) for p in (db, schema, table))
            display = f"{db}.{schema}.{table}"
            try:
                columns = self._columns(session, db, schema, table)
            except errors as exc:
                raise SnowflakeSchemaError(
                    f"destination '{self.name}': cannot read the columns of {display}: "
                    f"{self._redact(_message(exc))}. Fix: check that database {db} exists and "
                    "that the url's role may use it"
                ) from None
            if not columns:
                if not self.config.create_table:
                    raise SnowflakeSchemaError(
                        f"destination '{self.name}': table {display} does not exist; create it "
                        "or set create_table: true"
                    )
                key = stored_name(match_field)
                ddl = [f"{ident(key)} {column_type(match_type)} not null primary key"]
                ddl += [
                    f"{ident(stored_name(f))} {column_type(t)}"
                    for f, t in field_types.items()
                    if stored_name(f) != key
                ]
                try:
                    session.run(f"create table if not exists {fqn} ({', '.join(ddl)})")
                    columns = self._columns(session, db, schema, table)
                except errors as exc:
                    raise SnowflakeSchemaError(
                        f"destination '{self.name}': cannot create table {display}: "
                        f"{self._redact(_message(exc))}. Fix: create schema {db}.{schema}, or "
                        "grant CREATE TABLE on it to the url's role, or create the table"
                    ) from None
        by_name = {c.name: c for c in columns}
        wanted = [match_field, *field_types]
        resolved = {f: self._resolve(f, by_name) for f in wanted}
        missing = [f for f, c in resolved.items() if c is None]
        if missing:
            raise SnowflakeSchemaError(
                f"destination '{self.name}': table {display} has no column(s) "
                f"{', '.join(missing)}; add them or change the sync's mappings"
            )
        mapped = {c.name for c in resolved.values() if c is not None}
        key_column = resolved[match_field]
        assert key_column is not None
        self.target = _Target(
            fqn=fqn,
            display=display,
            key=key_column,
            columns={f: c for f, c in resolved.items() if c is not None},
            required=[
                c.name
                for c in columns
                if not c.nullable and not c.has_default and c.name not in mapped
            ],
        )

    def check(self, object_: str | None = None) -> str:
        """Log in and, for a sync's `object`, read the table's columns (or, where the first
        run would create it, that its schema exists). Read-only: nothing is created."""
        errors = _sf_errors()
        with self._session() as session:
            try:
                user, role, db = session.run(
                    "select current_user(), current_role(), current_database()"
                )[0]
                said = f"logged in to Snowflake as {user} (role {role}, database {db})"
                if not object_:
                    return said
                db, schema, table = self._parts(object_)
                display = f"{db}.{schema}.{table}"
                columns = self._columns(session, db, schema, table)
                if columns:
                    return said + f"; table {display} exists ({len(columns)} columns)"
                if not self.config.create_table:
                    raise SnowflakeSchemaError(
                        f"destination '{self.name}': table {display} does not exist. Fix: "
                        "create it, or set create_table: true"
                    )
                found = session.run(
                    f"select count(*) from {ident(db)}.information_schema.schemata "
                    "where schema_name = ?",
                    [schema],
                )
            except errors as exc:
                raise SnowflakeSchemaError(
                    f"destination '{self.name}': {self._redact(_message(exc))}. Fix: check "
                    "the url's database and role, and the sync's object"
                ) from None
        if not found or not found[0][0]:
            raise SnowflakeSchemaError(
                f"destination '{self.name}': table {display} does not exist and neither does "
                f"schema {db}.{schema}. Fix: create the schema (the destination creates "
                "tables, not schemas)"
            )
        return (
            said + f"; table {display} does not exist yet: the first run creates it (the url's "
            f"role needs CREATE TABLE on schema {db}.{schema})"
        )

    # -- delivery -----------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        assert self.target is not None
        with self._session() as session:
            return self._deliver(session, batch)

    def _screen(self, writes: list[Record], rejected: dict[str, str]) -> list[Record]:
        """Records Snowflake would refuse for a null in a NOT NULL column (rejected here in
        its words: a failed statement would cost a bisect), a null key, or a key another
        record of the batch has."""
        assert self.target is not None
        t = self.target
        seen: set[Any] = set()
        kept = []
        for r in writes:
            if r.match_value is None:
                rejected[r.key] = (
                    f"{t.key.name} is null: a record is matched by its value and needs one"
                )
                continue
            nulls = [
                t.columns[f].name
                for f, v in r.fields.items()
                if v is None and not t.columns[f].nullable
            ]
            if nulls:
                rejected[r.key] = f"NULL result in a non-nullable column {nulls[0]}"
                continue
            try:
                duplicate = r.match_value in seen
                seen.add(r.match_value)
            except TypeError:
                duplicate = False
            if duplicate:
                rejected[r.key] = (
                    f"another record of the batch has {t.key.name} = {r.match_value!r}; the "
                    "match column must be unique"
                )
                continue
            kept.append(r)
        return kept

    def _deliver(self, session: _Session, batch: Batch) -> BatchResult:
        assert self.target is not None
        t = self.target
        errors = _sf_errors()
        rejected: dict[str, str] = {}
        removed = [r for r in batch.records if r.op == "removed"]
        writes = self._screen([r for r in batch.records if r.op != "removed"], rejected)
        if writes and batch.mode != "update" and t.required:
            raise SnowflakeSchemaError(
                f"destination '{self.name}': table {t.display} has NOT NULL column(s) "
                f"{', '.join(t.required)} without a default that the sync does not map, so "
                "no row can be inserted. Fix: map them, give them a default, or use mode update"
            )
        by_fields: dict[tuple[str, ...], list[Record]] = defaultdict(list)
        for r in writes:
            by_fields[tuple(f for f in r.fields if t.columns[f].name != t.key.name)].append(r)
        used: set[str] = set()
        try:
            groups = [self._stage(session, f, g, used) for f, g in by_fields.items()]
            if batch.mode == "update":
                for g in groups:
                    for n in self._absent(session, g):
                        r = g.records[n]
                        rejected[r.key] = (
                            f"no row with {t.key.name} = {r.match_value!r} in {t.display}; "
                            "update mode never creates rows"
                        )
        except errors as exc:
            session.broken = True
            raise self._failure(exc, "the batch's staging") from None
        try:
            session.run("begin")
            self._delete(session, removed)
            for g in groups:
                self._apply(session, batch.mode, g, 0, len(g.records) - 1)
            session.run("commit")
            return BatchResult(rejected=rejected)
        except errors as exc:
            self._rollback(session)
            if not _is_data_error(exc):
                session.broken = True
                raise self._failure(exc, "the batch") from None
        # A value failed the batch: apply in halves to reject only the records it is in.
        try:
            self._delete(session, removed)
        except errors as exc:
            session.broken = True
            raise self._failure(exc, "the batch's deletes") from None
        budget = self.request_budget()
        for g in groups:

            def reject(n: int, reason: str, g: _Group = g) -> None:
                rejected.setdefault(g.records[n].key, reason)

            send = self._sender(session, batch.mode, g)
            send_isolating(range(len(g.records)), send, reject, budget)
        return BatchResult(rejected=rejected)

    def _sender(
        self, session: _Session, mode: str, group: _Group
    ) -> Callable[[Sequence[int]], str | None]:
        errors = _sf_errors()

        def send(rows: Sequence[int]) -> str | None:
            try:
                session.run("begin")
                self._apply(session, mode, group, rows[0], rows[-1])
                session.run("commit")
                return None
            except errors as exc:
                self._rollback(session)
                if _is_data_error(exc):
                    return self._redact(_message(exc))
                session.broken = True
                raise self._failure(exc, "the batch") from None

        return send

    @staticmethod
    def _rollback(session: _Session) -> None:
        try:
            session.run("rollback")
        except Exception:  # noqa: BLE001 - the session is not reused
            session.broken = True

    # -- staging --------------------------------------------------------------------------------
    def _temp_table(self, session: _Session, signature: tuple[str, ...], used: set[str]) -> str:
        """An empty temporary table of the session with these column types (N, K, C0...),
        not yet used by this batch. Temporary tables live in the url's schema (the session's
        current one) and go with the session."""
        for name in session.tables.get(signature, []):
            if name not in used:
                break
        else:
            name = f"_RETL_IN_{secrets.token_hex(6).upper()}"
            cols = ", ".join(f"C{i} {t}" for i, t in enumerate(signature[1:]))
            session.run(
                f"create temporary table {name} (N NUMBER(38,0), K {signature[0]}"
                + (f", {cols})" if cols else ")")
            )
            session.tables.setdefault(signature, []).append(name)
        if name in session.filled:
            session.run(f"truncate table {name}")
        used.add(name)
        session.filled.add(name)
        return name

    def _stage(
        self, session: _Session, fields: tuple[str, ...], records: list[Record], used: set[str]
    ) -> _Group:
        keys = stage_column([r.match_value for r in records])
        cols = [stage_column([r.fields[f] for r in records]) for f in fields]
        signature = (keys.sf_type, *(c.sf_type for c in cols))
        table = self._temp_table(session, signature, used)
        staged = [keys, *cols]
        names = ["N", "K", *(f"C{i}" for i in range(len(cols)))]
        if len(records) >= COPY_MIN_ROWS:
            self._copy(session, table, names, staged)
        else:
            picks = ", ".join(
                f"value[{i}]::{t}"
                for i, t in enumerate(["NUMBER(38,0)", *(s.sf_type for s in staged)])
            )
            columns = [list(range(len(records))), *(s.json_values() for s in staged)]
            rows = json.dumps([list(r) for r in zip(*columns, strict=True)], allow_nan=False)
            session.run(
                f"insert into {table} ({', '.join(names)}) select {picks} "
                "from table(flatten(input => parse_json(?)))",
                [rows],
            )
        return _Group(table, fields, records, [c.kind for c in cols])

    def _copy(self, session: _Session, table: str, names: list[str], staged: list[Staged]) -> None:
        """The rows as one Parquet file, PUT to the session's temporary stage and loaded with
        COPY INTO (removed from the stage once loaded)."""
        if session.stage is None:
            stage = f"_RETL_STAGE_{secrets.token_hex(6).upper()}"
            session.run(f"create temporary stage if not exists {stage}")
            session.stage = stage
        n = len(staged[0].values)
        arrow = pa.table(
            [pa.array(range(n), pa.int64()), *(s.array() for s in staged)], names=names
        )
        file = f"retl_{secrets.token_hex(8)}.parquet"
        with tempfile.TemporaryDirectory(prefix="retl_snowflake_") as folder:
            path = os.path.join(folder, file)
            pq.write_table(arrow, path)
            quoted = path.replace("\\", "\\\\").replace("'", "\\'")
            session.run(
                f"put 'file://{quoted}' @{session.stage} auto_compress=false overwrite=true"
            )
        picks = ", ".join(f"$1:{c}" for c in names)
        loaded = session.run(
            f"copy into {table} ({', '.join(names)}) from (select {picks} from "
            f"@{session.stage}/{file}) file_format = (type = parquet use_logical_type = true "
            "binary_as_text = false) purge = true on_error = abort_statement"
        )
        count = sum(int(row[3]) for row in loaded if len(row) > 3 and row[3] is not None)
        if count != n:
            raise SnowflakeDeliveryError(
                f"destination '{self.name}': COPY INTO loaded {count} of the batch's {n} rows "
                f"({loaded!r})"
            )

    # -- applying -------------------------------------------------------------------------------
    def _absent(self, session: _Session, group: _Group) -> list[int]:
        """Staged rows (their N) whose key is not in the table."""
        assert self.target is not None
        t = self.target
        key = ident(t.key.name)
        rows = session.run(
            f"select s.N from {group.table} as s where not exists (select 1 from {t.fqn} as t "
            f"where t.{key} = cast(s.K as {t.key.cast}))"
        )
        return sorted(int(r[0]) for r in rows)

    def _delete(self, session: _Session, removed: list[Record]) -> None:
        """Removed keys (the key as last synced, as text) deleted, one bound JSON array per
        statement."""
        if not removed:
            return
        assert self.target is not None
        t = self.target
        sql = (
            f"delete from {t.fqn} where {ident(t.key.name)} in (select "
            f"cast(value::varchar as {t.key.cast}) from table(flatten(input => parse_json(?))))"
        )
        chunk: list[str] = []
        size = 0
        for r in removed:
            text = json.dumps(None if r.match_value is None else str(r.match_value))
            if chunk and size + len(text) > MAX_JSON_CHARS:
                session.run(sql, ["[" + ",".join(chunk) + "]"])
                chunk, size = [], 0
            chunk.append(text)
            size += len(text) + 1
        session.run(sql, ["[" + ",".join(chunk) + "]"])

    def _apply(self, session: _Session, mode: str, group: _Group, first: int, last: int) -> None:
        """Staged rows `first`..`last` written into the target, in the caller's transaction."""
        assert self.target is not None
        t = self.target
        key = ident(t.key.name)
        staged_key = f"cast(s.K as {t.key.cast})"
        columns = [t.columns[f] for f in group.fields]
        values = [
            value_sql(f"s.C{i}", kind, c.data_type)
            for i, (c, kind) in enumerate(zip(columns, group.kinds, strict=True))
        ]
        rows = [first, last]
        if mode in ("update", "upsert", "mirror") and columns:
            sets = ", ".join(f"{ident(c.name)} = {v}" for c, v in zip(columns, values, strict=True))
            session.run(
                f"update {t.fqn} as t set {sets} from (select * from {group.table} "
                f"where N between ? and ?) as s where t.{key} = {staged_key}",
                rows,
            )
        if mode in ("insert", "upsert", "mirror"):
            names = ", ".join([key, *(ident(c.name) for c in columns)])
            session.run(
                f"insert into {t.fqn} ({names}) select {', '.join([staged_key, *values])} "
                f"from {group.table} as s where s.N between ? and ? and not exists "
                f"(select 1 from {t.fqn} as t where t.{key} = {staged_key})",
                rows,
            )

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            with suppress(Exception):
                session.con.close()
