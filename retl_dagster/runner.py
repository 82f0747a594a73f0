"""Start one sync run through Dagster: the one path `retl sync`, tests and scripts share."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from retl_dagster.components import sync as sync_component
from retl_dagster.components.pools import apply_pool_limits, limits_of
from retl_dagster.components.references import sync_configs
from retl_dagster.engine.runs import get_run, mark_incomplete, new_run_id, summarize
from retl_dagster.engine.warehouse import Warehouse

PID_TAG, HOST_TAG = "retl/pid", "retl/host"
"""Run tags naming the process that runs the sync, to tell a live run from a dead one."""
EXIT_CODES = {"succeeded": 0, "partial": 2}
"""`retl sync` exit code by run status; anything else (failed) is 1."""


@dataclass
class SyncOutcome:
    summary: dict[str, Any]
    """The `--json` shape."""
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


def _first_failure(result: dg.ExecuteInProcessResult) -> str | None:
    """The first failed step's own message (the innermost cause, not Dagster's wrapper)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return error.message.strip()
    return None


class SyncDisabled(RuntimeError):
    """The sync is switched off (`enabled: false`)."""


class SyncAlreadyRunning(RuntimeError):
    """The same sync is running already; a second run would race it for the same records."""


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settle_interrupted(instance: dg.DagsterInstance, name: str) -> None:
    """Refuse to start while sync `name` runs; a run whose process died (SIGKILL, a crash) is
    marked failed in Dagster and Incomplete in `_retl.sync_runs`: the next run resumes it."""
    for record in instance.get_run_records(
        dg.RunsFilter(job_name=sync_component.job_name(name), statuses=IN_FLIGHT)
    ):
        run = record.dagster_run
        pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid and host == socket.gethostname() and not _alive(int(pid)):
            instance.report_run_failed(run, "the process running this sync died")
            # Its warehouse pool slot would otherwise stay claimed by a run that is gone.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            with Warehouse() as wh:
                mark_incomplete(wh, name)
            continue
        raise SyncAlreadyRunning(
            f"sync {name} is already running (Dagster run {run.run_id}, partition "
            f"{run.tags.get('dagster/partition', '?')}); wait for it to finish or terminate it "
            "in the Dagster UI"
        )


def run_sync(
    defs: dg.Definitions,
    name: str,
    instance: dg.DagsterInstance,
    *,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
    replay_of: str | None = None,
    run_id: str | None = None,
) -> SyncOutcome:
    """Add a new run partition for sync `name` and execute its job on `instance`
    (`replay_of`: resend every record of that earlier run instead of diffing; `run_id`: run
    that partition instead, e.g. one a schedule or sensor requested)."""
    config = {c.name: c for c in sync_configs(defs)}[name]
    if not config.enabled:
        raise SyncDisabled(
            f"sync {name} is disabled (enabled: false in its defs.yaml); enable it to run it"
        )
    settle_interrupted(instance, name)
    # The pools' limits as the YAML declares them (a deployment's sensor does the same).
    apply_pool_limits(instance, limits_of(dict(defs.resources or {})))
    run_id = run_id or new_run_id()
    tags = {**(tags or {}), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if replay_of:
        tags[sync_component.REPLAY_TAG] = replay_of
    instance.add_dynamic_partitions(sync_component.partitions_def_name(name), [run_id])
    job = defs.resolve_job_def(sync_component.job_name(name))
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        partition_key=run_id,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags=tags,
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
