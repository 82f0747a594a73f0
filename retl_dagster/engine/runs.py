"""Run bookkeeping: run ids and the `_retl.sync_runs` log users query with SQL."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from retl_dagster.engine.state import (
    DIFF_COLUMNS,
    RECORD_RESULTS,
    STAGE_TIMINGS,
    SYNC_RUNS,
    ensure_state_schema,
)
from retl_dagster.engine.warehouse import Warehouse

RUN_COLUMNS = (
    "run_id",
    "sync",
    "status",
    "started_at",
    "finished_at",
    "rows_queried",
    "added",
    "changed",
    "removed",
    "succeeded",
    "rejected",
    "error",
    "dagster_run_id",
    "identified",
    "matched",
    "match_rate",
    *STAGE_TIMINGS,
    *DIFF_COLUMNS,
)


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable, unique and readable: `20261123T220512Z-3f9a1c`; one Dagster partition each."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def record_run(
    wh: Warehouse, sync: str, run_id: str, *, finished: bool = False, **values: Any
) -> None:
    """Insert or update this run's row in `_retl.sync_runs`; `finished` stamps finished_at."""
    unknown = set(values) - set(RUN_COLUMNS)
    assert not unknown, unknown
    ensure_state_schema(wh, sync)
    exists = wh.fetchone(f"select 1 from {SYNC_RUNS} where sync = ? and run_id = ?", [sync, run_id])
    if not exists:
        wh.execute(
            f"insert into {SYNC_RUNS} (run_id, sync, status, started_at) "
            "values (?, ?, ?, current_timestamp)",
            [run_id, sync, values.get("status", "querying")],
        )
    if values or finished:
        sets = ", ".join(
            [f"{k} = ?" for k in values] + (["finished_at = current_timestamp"] if finished else [])
        )
        wh.execute(
            f"update {SYNC_RUNS} set {sets} where sync = ? and run_id = ?",
            [*values.values(), sync, run_id],
        )


def get_run(wh: Warehouse, sync: str, run_id: str) -> dict[str, Any] | None:
    if not wh.relation_exists(SYNC_RUNS):
        return None
    rows = wh.fetchall(
        f"select {', '.join(RUN_COLUMNS)} from {SYNC_RUNS} where sync = ? and run_id = ?",
        [sync, run_id],
    )
    return dict(zip(RUN_COLUMNS, rows[0], strict=True)) if rows else None


def run_history(wh: Warehouse, sync: str, limit: int = 20) -> list[dict[str, Any]]:
    if not wh.relation_exists(SYNC_RUNS):
        return []
    rows = wh.fetchall(
        f"select {', '.join(RUN_COLUMNS)} from {SYNC_RUNS} where sync = ? "
        f"order by started_at desc limit {int(limit)}",
        [sync],
    )
    return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in rows]


IN_FLIGHT_STATUSES = ("querying", "preparing", "queued", "in_progress")


def mark_incomplete(wh: Warehouse, sync: str, except_run: str = "") -> None:
    """Runs of `sync` left in flight by a dead process: Incomplete (the next run resumes).
    `except_run`: the run starting now, which calls this for whatever died before it."""
    if not wh.relation_exists(SYNC_RUNS):
        return
    wh.execute(
        f"update {SYNC_RUNS} set status = 'incomplete', finished_at = current_timestamp, error = "
        "'interrupted: the process running this sync died; acknowledged batches are kept and "
        "the next run sends the rest' where sync = ? and run_id <> ? and status in "
        f"({', '.join(repr(s) for s in IN_FLIGHT_STATUSES)})",
        [sync, except_run],
    )


def prune(wh: Warehouse, sync: str, retention_days: int) -> list[str]:
    """Drop the stored diffs, record logs and run rows of runs older than `retention_days`;
    returns their run ids (their Dagster partitions go too)."""
    t = ensure_state_schema(wh, sync)  # its SyncTables
    old = [
        r
        for (r,) in wh.fetchall(
            f"select run_id from {SYNC_RUNS} where sync = ? and "
            f"started_at < {wh.days_ago(retention_days)}",
            [sync],
        )
    ]
    if old:
        with wh.transaction():
            for table, column in (
                (t.diff, "_retl_run_id"),
                (RECORD_RESULTS, "run_id"),
                (SYNC_RUNS, "run_id"),
            ):
                extra = "" if table == t.diff else " and sync = ?"
                marks = ", ".join("?" for _ in old)
                wh.execute(
                    f"delete from {table} where {column} in ({marks}){extra}",
                    [*old] + ([] if table == t.diff else [sync]),
                )
    return old


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """A `_retl.sync_runs` row in the `--json` shape."""
    started, finished = row.get("started_at"), row.get("finished_at")
    duration = (finished - started).total_seconds() if started and finished else None
    out = {
        "sync": row["sync"],
        "status": row["status"],
        "run_id": row["run_id"],
        **{k: row.get(k) for k in ("rows_queried", "added", "changed", "removed")},
        **{k: row.get(k) for k in ("succeeded", "rejected")},
        "duration_s": round(duration, 3) if duration is not None else None,
        "started_at": started.isoformat() if started else None,
        "dagster_run_id": row.get("dagster_run_id"),
    }
    timings = {k.removesuffix("_s"): row[k] for k in STAGE_TIMINGS if row.get(k) is not None}
    if timings:
        out["stage_s"] = {k: round(float(v), 3) for k, v in timings.items()}
    if row.get("identified") is not None:  # audience and conversion destinations
        out |= {k: row.get(k) for k in ("identified", "matched", "match_rate")}
    if row.get("error"):
        out["error"] = row["error"]
    return out
