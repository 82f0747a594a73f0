"""Start one sync run through Dagster: the one path `retl sync`, tests and scripts share."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from retl_dagster.components import sync as sync_component
from retl_dagster.engine.runs import get_run, new_run_id
from retl_dagster.engine.warehouse import Warehouse

EXIT_CODES = {"succeeded": 0, "partial": 2}
"""`retl sync` exit code by run status; anything else (failed) is 1."""


@dataclass
class SyncOutcome:
    summary: dict[str, Any]
    """The `--json` shape (DESIGN.md §4)."""
    result: dg.ExecuteInProcessResult

    @property
    def status(self) -> str:
        return str(self.summary["status"])

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)


def read_run(sync: str, run_id: str) -> dict[str, Any] | None:
    """This run's row of `_retl.sync_runs`."""
    with Warehouse(read_only=True) as wh:
        return get_run(wh, sync, run_id)


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
    if row.get("error"):
        out["error"] = row["error"]
    return out


def _first_failure(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            return (
                event.step_failure_data.error.message.strip()
                if event.step_failure_data.error
                else None
            )
    return None


def run_sync(
    defs: dg.Definitions,
    name: str,
    instance: dg.DagsterInstance,
    *,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
) -> SyncOutcome:
    """Add a new run partition for sync `name` and execute its job on `instance`."""
    run_id = new_run_id()
    instance.add_dynamic_partitions(sync_component.partitions_def_name(name), [run_id])
    job = defs.resolve_job_def(sync_component.job_name(name))
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        partition_key=run_id,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags=tags or {},
    )
    row = read_run(name, run_id) or {"sync": name, "run_id": run_id, "status": "failed"}
    summary = summarize(row)
    if not result.success:
        summary["status"] = "failed"
        summary.setdefault("error", _first_failure(result) or "the run failed")
    if summary["duration_s"] is None:
        summary["duration_s"] = round(time.monotonic() - started, 3)
    summary["dagster_run_id"] = result.run_id
    return SyncOutcome(summary, result)
