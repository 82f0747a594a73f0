"""The `_retl` schema: state, per-run diffs, pending rejections and sync logs.

| table                          | one row per                | written by          |
|--------------------------------|----------------------------|---------------------|
| `_retl.<sync>__state`          | record the destination has | load (acked only)   |
| `_retl.<sync>__diff`           | record to send in a run    | diff                |
| `_retl.<sync>__pending`        | record currently rejected  | load                |
| `_retl.sync_runs`              | run                        | diff, load          |
| `_retl.sync_record_results`    | record sent in a run       | load                |
"""

from __future__ import annotations

from dataclasses import dataclass

from retl_dagster.common.settings import STATE_SCHEMA
from retl_dagster.engine.warehouse import Warehouse, quote_ident

SYNC_RUNS = f"{STATE_SCHEMA}.sync_runs"
STAGE_TIMINGS = ("query_s", "diff_s", "map_s", "send_s", "commit_s")
"""Seconds a run spent in each stage, as `_retl.sync_runs` keeps them: querying the model and
checking its keys, diffing, reading the run's rows out and mapping them, sending (the wall time
of delivery, batches in flight overlapping), committing acknowledged outcomes (on the committer
thread, overlapping sending)."""
DIFF_COLUMNS = ("diff_kind", "cursor_to", "diff_signature")
"""How a run diffed, as `_retl.sync_runs` keeps it: `full` or `incremental` (null for a
replay); the highest `incremental.cursor` value the model had when the run
read it (the next incremental run starts there); a digest of what the diff depends on (model,
key, mappings, cursor), so a changed declaration diffs in full."""
RECORD_RESULTS = f"{STATE_SCHEMA}.sync_record_results"


@dataclass(frozen=True)
class SyncTables:
    """Fully qualified names of one sync's tables."""

    sync: str

    @property
    def state(self) -> str:
        return f"{STATE_SCHEMA}.{quote_ident(self.sync + '__state')}"

    @property
    def diff(self) -> str:
        return f"{STATE_SCHEMA}.{quote_ident(self.sync + '__diff')}"

    @property
    def pending(self) -> str:
        return f"{STATE_SCHEMA}.{quote_ident(self.sync + '__pending')}"


@dataclass(frozen=True)
class StateTypes:
    """Column types of a sync's state: its key takes the model's primary-key type and its hash
    the warehouse's row-hash type, because the diff joins the whole model with the state and a
    join on native values costs about half of one on text (BENCHMARKS.md)."""

    key: str
    hash: str


def ensure_state_schema(wh: Warehouse, sync: str, key_type: str | None = None) -> SyncTables:
    """Create the `_retl` tables this sync needs (idempotent). The state table is made by the
    first diff, which knows the primary key's type (`key_type`)."""
    t = SyncTables(sync)
    with wh.ddl_lock():
        wh.execute(f"create schema if not exists {STATE_SCHEMA}")
        if key_type is not None:
            wh.execute(
                f"""create table if not exists {t.state} (
                    _retl_key {key_type} primary key,
                    _retl_hash {wh.hash_type} not null,
                    _retl_match varchar,
                    _retl_dest_id varchar,
                    first_synced_at timestamptz not null,
                    last_synced_at timestamptz not null,
                    last_run_id varchar not null)"""
            )
        wh.execute(
            f"""create table if not exists {t.pending} (
                _retl_key varchar primary key,
                op varchar not null,
                _retl_hash varchar,
                expired boolean not null default false,
                error varchar not null,
                first_failed_at timestamptz not null,
                last_failed_at timestamptz not null,
                attempts integer not null,
                last_run_id varchar not null)"""
        )
        wh.execute(
            f"""create table if not exists {SYNC_RUNS} (
                run_id varchar not null,
                sync varchar not null,
                status varchar not null,
                started_at timestamptz not null,
                finished_at timestamptz,
                rows_queried bigint,
                added bigint, changed bigint, removed bigint,
                succeeded bigint, rejected bigint,
                error varchar,
                dagster_run_id varchar,
                identified bigint, matched bigint, match_rate double precision,
                query_s double precision, diff_s double precision, map_s double precision,
                send_s double precision, commit_s double precision,
                diff_kind varchar, cursor_to varchar, diff_signature varchar,
                primary key (sync, run_id))"""
        )
        wh.execute(
            f"""create table if not exists {RECORD_RESULTS} (
                run_id varchar not null,
                sync varchar not null,
                _retl_key varchar not null,
                op varchar not null,
                status varchar not null,
                error varchar,
                recorded_at timestamptz not null)"""
        )
        # Tables made by an older retl-dagster gain the columns added since.
        for table, column, type_ in (
            (t.pending, "_retl_hash", "varchar"),
            (t.pending, "expired", "boolean default false"),
            (SYNC_RUNS, "identified", "bigint"),
            (SYNC_RUNS, "matched", "bigint"),
            (SYNC_RUNS, "match_rate", "double precision"),
            *((SYNC_RUNS, stage, "double precision") for stage in STAGE_TIMINGS),
            *((SYNC_RUNS, column, "varchar") for column in DIFF_COLUMNS),
        ):
            wh.execute(f"alter table {table} add column if not exists {column} {type_}")
    return t


def state_types(wh: Warehouse, t: SyncTables) -> StateTypes:
    """The state's key and hash types as its table has them (older tables: text)."""
    types = dict(wh.columns_of(f"select _retl_key, _retl_hash from {t.state}"))
    return StateTypes(types["_retl_key"], types["_retl_hash"])


def reset(wh: Warehouse, sync: str) -> int:
    """Forget what was delivered: the next run sends every row as added. Returns the number of
    records forgotten. Diffs and logs of past runs stay (for replays and history)."""
    t = ensure_state_schema(wh, sync)
    if not wh.relation_exists(f"{STATE_SCHEMA}.{sync}__state"):
        return 0  # never diffed: nothing to forget
    row = wh.fetchone(f"select count(*) from {t.state}")
    with wh.transaction():
        wh.execute(f"delete from {t.state}")
        wh.execute(f"delete from {t.pending}")
    return int(row[0]) if row else 0
