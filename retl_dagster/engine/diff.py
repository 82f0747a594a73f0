"""Diff stage: compare the model with the committed state, in the warehouse, in SQL.

Only the mapped columns (and the mapping itself) feed a row's hash, so a change to an
unmapped column sends nothing and a changed mapping resends what it affects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from retl_dagster.common.settings import STATE_SCHEMA
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.state import (
    RECORD_RESULTS,
    SYNC_RUNS,
    SyncTables,
    ensure_state_schema,
    state_types,
)
from retl_dagster.engine.warehouse import Warehouse, quote_ident, quote_literal

MAX_REPORTED_KEYS = 20


@dataclass
class KeyReport:
    """What the primary-key check found in the model."""

    rows: int
    null_keys: int
    duplicate_keys: int
    duplicate_samples: list[tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.null_keys == 0 and self.duplicate_keys == 0

    def describe(self, sync: str, primary_key: str) -> str:
        parts = []
        if self.null_keys:
            parts.append(f"{self.null_keys} row(s) have a null {primary_key}")
        if self.duplicate_keys:
            sample = ", ".join(f"{k!r} x{n}" for k, n in self.duplicate_samples)
            parts.append(f"{self.duplicate_keys} {primary_key} value(s) repeat: {sample}")
        return (
            f"sync '{sync}', field 'primary_key': " + "; ".join(parts) + ". Fix: make "
            f"'{primary_key}' unique and not null in the model (or pick another primary_key); "
            "nothing was sent and the sync state is unchanged"
        )


@dataclass
class DiffCounts:
    rows_queried: int
    added: int
    changed: int
    removed: int

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed


def model_columns(wh: Warehouse, config: SyncConfig, model_sql: str) -> dict[str, str]:
    """Model column name -> warehouse type, checking every column the sync reads exists."""
    try:
        cols = wh.columns_of(model_sql)
    except Exception as exc:  # the warehouse's own message says what is wrong with the SQL
        raise ConfigError(
            config.name,
            f"model.{config.model.kind}",
            f"the warehouse cannot run the model: {exc}".rstrip("."),
            "fix the model's SQL/table name, or build the dbt model first",
        ) from exc
    config.check_columns([c for c, _ in cols])
    return dict(cols)


def check_keys(wh: Warehouse, config: SyncConfig, model_sql: str) -> KeyReport:
    pk = quote_ident(config.primary_key)
    row = wh.fetchone(
        f"select count(*), count(*) - count({pk}), count({pk}) - count(distinct {pk}) "
        f"from ({model_sql}) as m"
    )
    assert row is not None
    report = KeyReport(rows=int(row[0]), null_keys=int(row[1]), duplicate_keys=0)
    if int(row[2]):
        dups = wh.fetchall(
            f"select cast({pk} as varchar), count(*) from ({model_sql}) as m "
            f"where {pk} is not null group by 1 having count(*) > 1 "
            f"order by 2 desc, 1 limit {MAX_REPORTED_KEYS}"
        )
        n = wh.fetchone(
            f"select count(*) from (select {pk} from ({model_sql}) as m where {pk} is not null "
            f"group by 1 having count(*) > 1) as d"
        )
        report.duplicate_keys = int(n[0]) if n else 0
        report.duplicate_samples = [(str(k), int(c)) for k, c in dups]
    return report


def row_hash_sql(config: SyncConfig, dialect: str = "duckdb") -> str:
    """A row's hash over its mapped values, tagged with the mapping (the tags carry everything
    but the values: renames, static values, paths), so a changed mapping changes the hash.

    DuckDB: its vectorised `hash()` of the values (64 bits), ten times cheaper than md5 over
    text and the difference between a diff near a table scan and one that is not. Snowflake:
    its `HASH()` of the values, as text. PostgreSQL:
    md5 over the length-prefixed values (no multi-value hash there); either is stable for the
    life of a warehouse's state, which is all a diff needs.
    """
    tags: list[str] = []
    columns: list[str] = []
    for m in config.mappings:
        for tag, column in m.hash_parts():
            tags.append(tag if column is None else f"{tag}<{column}>")
            if column is not None:
                columns.append(quote_ident(column))
    signature = quote_literal("|".join(tags))
    if dialect == "duckdb":
        return f"hash({', '.join([signature, *columns])})"
    if dialect == "snowflake":
        # Text: Snowflake's HASH is signed, fakesnow's unsigned (past a NUMBER(19)); as text
        # each is the same value on every run of one warehouse.
        return f"cast(hash({', '.join([signature, *columns])}) as varchar)"
    parts = [signature]
    for c in columns:
        v = f"cast({c} as varchar)"
        parts.append(f"coalesce(cast(length({v}) as varchar) || ':' || {v}, 'null')")
    return "md5(" + " || '|' || ".join(parts) + ")"


def expire_rejections(wh: Warehouse, config: SyncConfig, run_id: str) -> int:
    """Rejections older than `retry_rejected_days` stop being retried (until their row changes);
    each says so once in `_retl.sync_record_results` with status `expired`."""
    t = SyncTables(config.name)
    cutoff = wh.days_ago(config.retry_rejected_days)
    due = f"select _retl_key from {t.pending} where not expired and first_failed_at < {cutoff}"
    row = wh.fetchone(f"select count(*) from ({due}) as d")
    n = int(row[0]) if row else 0
    if n:
        days = config.retry_rejected_days
        wh.execute(
            f"insert into {RECORD_RESULTS} select ?, ?, _retl_key, op, 'expired', "
            f"'rejected since ' || cast(first_failed_at as varchar) || ' ({days} days): no more "
            "retries until the row changes. Last error: ' || error, current_timestamp "
            f"from {t.pending} where _retl_key in ({due})",
            [run_id, config.name],
        )
        wh.execute(f"update {t.pending} set expired = true where _retl_key in ({due})")
    return n


@dataclass(frozen=True)
class DiffPlan:
    """How a run diffs: in full (the whole model against the state), or incrementally (only the
    rows at or past `cursor_from`, and rows still rejected; nothing is removed)."""

    kind: str
    """`full` or `incremental`."""
    cursor_from: str | None = None
    """The incremental run's lower bound (the last finished run's highest cursor value)."""
    signature: str | None = None
    """Digest of what the diff depends on (None: the sync is not incremental)."""
    reason: str = ""
    """Why an incremental sync diffs in full this time."""

    @property
    def incremental(self) -> bool:
        return self.kind == "incremental"


def diff_signature(config: SyncConfig, model_sql: str) -> str:
    """What an incremental diff depends on: the model, the key, the mappings (as the row hash
    sees them), the match column and the cursor. A run whose signature differs from the last
    full diff's diffs in full: a changed mapping must reach every row, not only the recent."""
    cursor = config.incremental.cursor if config.incremental else ""
    match = config.match.column if config.match else ""
    text = "\x1f".join([model_sql, config.primary_key, row_hash_sql(config), match, cursor])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def plan_diff(
    wh: Warehouse, config: SyncConfig, model_sql: str, now: dt.datetime | None = None
) -> DiffPlan:
    """Full or incremental: incremental only for a sync declaring `incremental`, after a full
    diff of the same declaration finished within `full_every`, with a cursor value recorded by
    the last finished run and a state to compare with (a reset empties it: full again)."""
    inc = config.incremental
    if inc is None:
        return DiffPlan("full")
    signature = diff_signature(config, model_sql)
    if not wh.relation_exists(SYNC_RUNS):
        return DiffPlan("full", signature=signature, reason="first run")
    finished = (
        f"select diff_kind, cursor_to, diff_signature, started_at from {SYNC_RUNS} "
        "where sync = ? and status in ('succeeded', 'partial') "
        "and diff_kind in ('full', 'incremental')"
    )
    last = wh.fetchone(f"{finished} order by started_at desc limit 1", [config.name])
    if last is None:
        return DiffPlan("full", signature=signature, reason="no earlier finished run")
    if last[2] != signature:
        return DiffPlan(
            "full", signature=signature, reason="the model, key, mappings or cursor changed"
        )
    if last[1] is None:
        return DiffPlan("full", signature=signature, reason="the last run saw no cursor value")
    full = wh.fetchone(
        f"{finished} and diff_kind = 'full' and diff_signature = ? "
        "order by started_at desc limit 1",
        [config.name, signature],
    )
    now = now or dt.datetime.now(dt.UTC)
    if full is None or (now - _aware(full[3])).total_seconds() >= inc.full_every_s:
        return DiffPlan(
            "full", signature=signature, reason=f"full_every ({inc.full_every}) has passed"
        )
    t = SyncTables(config.name)
    if wh.fetchone(f"select 1 from {t.state} limit 1") is None:
        return DiffPlan("full", signature=signature, reason="nothing synced yet (or a reset)")
    return DiffPlan("incremental", cursor_from=str(last[1]), signature=signature)


def cursor_high(wh: Warehouse, config: SyncConfig, model_sql: str) -> str | None:
    """The model's highest `incremental.cursor` value, as text (read before the diff: a row
    changed meanwhile is at or past it, so the next run sees it again)."""
    assert config.incremental
    cursor = quote_ident(config.incremental.cursor)
    row = wh.fetchone(f"select cast(max({cursor}) as varchar) from ({model_sql}) as m")
    return None if row is None or row[0] is None else str(row[0])


def incremental_sql(wh: Warehouse, config: SyncConfig, model_sql: str, cursor_from: str) -> str:
    """The model narrowed to the rows an incremental run diffs: cursor at or past
    `cursor_from` (equal ones again: rows written in the same instant as the last read; the
    hash comparison drops those unchanged), and the rows whose records are still rejected (so
    they are retried as in a full diff).

    The cursor's condition stands alone in its WHERE, so the warehouse filters while it scans
    (an OR with the rejected keys would read every column of every row first); the rejected
    rows, when there are any, come from a second read joined with them (UNION ALL)."""
    assert config.incremental
    types = dict(wh.columns_of(model_sql))
    type_of = {c.lower(): ty for c, ty in types.items()}
    cursor = config.incremental.cursor
    literal = quote_literal(cursor_from)
    past = f"{quote_ident(cursor)} >= cast({literal} as {type_of[cursor.lower()]})"
    recent = f"select * from ({model_sql}) as retl_inc where {past}"
    t = SyncTables(config.name)
    row = wh.fetchone(f"select count(*) from {t.pending} where not expired")
    if row is None or not int(row[0]):
        return recent
    pk = quote_ident(config.primary_key)
    pk_type = type_of[config.primary_key.lower()]
    return (
        f"{recent} union all select * from ({model_sql}) as retl_retry "
        f"where {pk} in (select cast(_retl_key as {pk_type}) from {t.pending} "
        f"where not expired) and not coalesce({past}, false)"
    )


def rows_to_diff(wh: Warehouse, config: SyncConfig, model_sql: str) -> tuple[DiffPlan, str]:
    """How the next run diffs, and the SQL of the rows it diffs (the model, or the model
    narrowed to the rows past the cursor for an incremental diff)."""
    plan = plan_diff(wh, config, model_sql)
    if plan.incremental:
        assert plan.cursor_from is not None
        return plan, incremental_sql(wh, config, model_sql, plan.cursor_from)
    return plan, model_sql


def compute_diff(
    wh: Warehouse,
    config: SyncConfig,
    model_sql: str,
    run_id: str,
    rows_queried: int,
    *,
    incremental: bool = False,
) -> DiffCounts:
    """Write this run's added/changed/removed rows into `_retl.<sync>__diff`; return counts.

    Computing the same run again replaces its rows (re-materialising a partition is safe).
    `incremental`: `model_sql` holds only some rows (`incremental_sql`), so a state row without
    a model row is not a removal: the model joins the state one way and nothing is removed.
    """
    types = model_columns(wh, config, model_sql)
    type_of = {c.lower(): ty for c, ty in types.items()}
    t = ensure_state_schema(wh, config.name, key_type=type_of[config.primary_key.lower()])
    st = state_types(wh, t)
    cols = config.source_columns()
    col_defs = ", ".join(f"{quote_ident(c)} {type_of[c.lower()]}" for c in cols)
    wh.execute(
        f"create table if not exists {t.diff} (_retl_run_id varchar not null, "
        f"_retl_op varchar not null, _retl_key varchar not null, _retl_hash varchar, "
        f"_retl_match varchar, _retl_dest_id varchar, {col_defs})"
    )
    # A mapping that gained a column since the table was made: add it (older runs read null).
    existing = {c.lower() for c, _ in wh.columns_of(f"select * from {t.diff}")}
    for c in cols:
        if c.lower() not in existing:
            wh.execute(f"alter table {t.diff} add column {quote_ident(c)} {type_of[c.lower()]}")

    qcols = ", ".join(quote_ident(c) for c in cols)
    mcols = ", ".join(f"m.{quote_ident(c)}" for c in cols)
    pk = quote_ident(config.primary_key)
    match = f"cast({quote_ident(config.match.column)} as varchar)" if config.match else "null"
    join = "left join" if incremental else "full outer join"
    with wh.transaction():
        wh.execute(f"delete from {t.diff} where _retl_run_id = ?", [run_id])
        expire_rejections(wh, config, run_id)
        # One full outer join of the model (hashed once) with the state: added rows have no
        # state, removed rows no model row, changed rows another hash. Rejections that expired
        # are not offered again until their row changes (or, for a removal, comes back).
        wh.execute(
            f"""insert into {t.diff} (_retl_run_id, _retl_op, _retl_key, _retl_hash,
                _retl_match, _retl_dest_id, {qcols})
            with m as (
                select cast({pk} as {st.key}) as _retl_key,
                       cast({row_hash_sql(config, wh.dialect)} as {st.hash}) as _retl_hash,
                       {match} as _retl_match, {qcols}
                from ({model_sql}) as src
            ),
            j as (
                select cast(coalesce(m._retl_key, s._retl_key) as varchar) as _retl_key,
                       case when s._retl_key is null then 'added'
                            when m._retl_key is null then 'removed'
                            else 'changed' end as _retl_op,
                       cast(m._retl_hash as varchar) as _retl_hash,
                       case when m._retl_key is null then s._retl_match
                            else m._retl_match end as _retl_match,
                       s._retl_dest_id, {mcols}
                from m {join} {t.state} as s on s._retl_key = m._retl_key
                where m._retl_hash is distinct from s._retl_hash
            )
            select ?, _retl_op, _retl_key, _retl_hash, _retl_match, _retl_dest_id, {qcols}
            from j
            where not exists (
                select 1 from {t.pending} as p where p.expired and p._retl_key = j._retl_key
                and ((j._retl_op = 'removed' and p.op = 'removed')
                     or p._retl_hash = j._retl_hash))""",
            [run_id],
        )
    counts = dict(
        wh.fetchall(
            f"select _retl_op, count(*) from {t.diff} where _retl_run_id = ? group by 1", [run_id]
        )
    )
    return DiffCounts(
        rows_queried=rows_queried,
        added=int(counts.get("added", 0)),
        changed=int(counts.get("changed", 0)),
        removed=int(counts.get("removed", 0)),
    )


def stored_counts(wh: Warehouse, config: SyncConfig, run_id: str) -> DiffCounts | None:
    """The counts of a diff already stored for `run_id`, or None if there is none."""
    t = SyncTables(config.name)
    if not wh.relation_exists(f"{STATE_SCHEMA}.{config.name}__diff"):
        return None
    counts = dict(
        wh.fetchall(
            f"select _retl_op, count(*) from {t.diff} where _retl_run_id = ? group by 1", [run_id]
        )
    )
    if not counts:
        return None
    return DiffCounts(
        rows_queried=0,
        added=int(counts.get("added", 0)),
        changed=int(counts.get("changed", 0)),
        removed=int(counts.get("removed", 0)),
    )


def copy_run(wh: Warehouse, config: SyncConfig, source: str, target: str) -> DiffCounts:
    """Replay: make run `target`'s diff a copy of run `source`'s, to send every record again."""
    t = ensure_state_schema(wh, config.name)
    if stored_counts(wh, config, source) is None:
        raise ConfigError(
            config.name,
            "run_id",
            f"run {source} has no stored diff to replay (pruned, or it failed before diffing)",
            "pick a run from `retl runs` within the retention window",
        )
    cols = [c for c, _ in wh.columns_of(f"select * from {t.diff}") if c != "_retl_run_id"]
    listing = ", ".join(quote_ident(c) for c in cols)
    with wh.transaction():
        wh.execute(f"delete from {t.diff} where _retl_run_id = ?", [target])
        wh.execute(
            f"insert into {t.diff} (_retl_run_id, {listing}) select ?, {listing} from {t.diff} "
            "where _retl_run_id = ?",
            [target, source],
        )
    counts = stored_counts(wh, config, target)
    assert counts is not None
    return counts
