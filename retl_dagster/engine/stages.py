"""A run's stages, owned by the engine: diff a run, load it, plan, test a row, replay, reset.

Each takes a sync's config and an open warehouse, records its own status in
`_retl.sync_runs`, and returns an outcome. No Dagster here: the Dagster assets and jobs, and the
`retl` CLI, are thin adapters over these functions (as dagster-sling's and dagster-dbt's
components call one execute function), so each stage can be tested and reused without Dagster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from retl_dagster.destinations.base import AnyDestination, BatchResult, Record
from retl_dagster.destinations.http import HttpClient
from retl_dagster.engine import diff as diff_stage
from retl_dagster.engine import guardrails, preview
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.delivery import LoadResult, Progress, delivered_before, load
from retl_dagster.engine.diff import DiffCounts, KeyReport
from retl_dagster.engine.model_sql import model_select
from retl_dagster.engine.runs import get_run, mark_incomplete, prune, record_run
from retl_dagster.engine.state import SyncTables
from retl_dagster.engine.state import reset as reset_state
from retl_dagster.engine.warehouse import Warehouse


@dataclass
class DiffOutcome:
    """What the diff stage did with a run."""

    counts: DiffCounts | None = None
    """The run's added / changed / removed (None when no diff was made)."""
    replay_of: str | None = None
    """The run whose stored records this run sends (a replay, or a partition run again)."""
    keys: KeyReport | None = None
    """The primary-key check, when the stage ran it."""
    error: str | None = None
    """Why the run stops here (a declaration that does not fit the model, bad keys)."""
    plan: diff_stage.DiffPlan | None = None
    """Full or incremental, and why full (None when no diff was made)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def diff_run(
    wh: Warehouse,
    config: SyncConfig,
    run_id: str,
    *,
    replay_of: str | None = None,
    dagster_run_id: str | None = None,
    allow_removals: bool = False,
) -> DiffOutcome:
    """Diff the model against the sync's state into run `run_id`, after checking its keys.

    A run whose diff is already stored (its partition run again), or a replay of an earlier run
    (`replay_of`), sends those stored records again rather than diffing anew. The run's row moves
    querying -> preparing -> queued, or to failed with the reason. A diff removing more than the
    sync's `guardrails.max_removed_percent` of its synced records fails the run and is dropped
    (so running the partition again diffs anew), unless `allow_removals`.
    """
    name = config.name
    # One run of a sync at a time (retl's run queue limits tag retl/sync to 1; `retl sync`
    # refuses a second): a run of this sync still in flight in the state died, wherever it
    # ran (a killed worker on another machine too). It shows Incomplete; this run resumes it.
    mark_incomplete(wh, name, except_run=run_id)
    if replay_of:
        # An unknown run to replay is a mistake at launch: no run row, nothing turns red.
        problem = replay_problem(wh, config, replay_of)
        if problem:
            return DiffOutcome(replay_of=replay_of, error=problem)
    stored = diff_stage.stored_counts(wh, config, run_id)
    if replay_of or stored is not None:
        source = replay_of or run_id
        counts = diff_stage.copy_run(wh, config, source, run_id) if replay_of else stored
        assert counts is not None
        record_run(
            wh,
            name,
            run_id,
            status="queued",
            dagster_run_id=dagster_run_id,
            added=counts.added,
            changed=counts.changed,
            removed=counts.removed,
            error=None,
        )
        return DiffOutcome(counts=counts, replay_of=source)
    # error=None: a partition run again (e.g. with allow_removals) starts without the old error.
    record_run(wh, name, run_id, status="querying", dagster_run_id=dagster_run_id, error=None)
    started = time.monotonic()
    try:
        model_sql = model_select(config)
        diff_stage.model_columns(wh, config, model_sql)
        cursor_to = diff_stage.cursor_high(wh, config, model_sql) if config.incremental else None
        # An incremental diff's key check too reads only its rows: a key duplicated between
        # one of them and an older row shows in the next full diff.
        plan, model_sql = diff_stage.rows_to_diff(wh, config, model_sql)
        keys = diff_stage.check_keys(wh, config, model_sql)
    except ConfigError as exc:
        record_run(wh, name, run_id, status="failed", error=str(exc), finished=True)
        return DiffOutcome(error=str(exc))
    if not keys.ok:
        message = keys.describe(name, config.primary_key)
        record_run(
            wh, name, run_id, status="failed", error=message, rows_queried=keys.rows, finished=True
        )
        return DiffOutcome(keys=keys, error=message)
    query_s = time.monotonic() - started
    record_run(wh, name, run_id, status="preparing", rows_queried=keys.rows, query_s=query_s)
    started = time.monotonic()
    counts = diff_stage.compute_diff(
        wh, config, model_sql, run_id, keys.rows, incremental=plan.incremental
    )
    record_run(
        wh,
        name,
        run_id,
        diff_s=time.monotonic() - started,
        diff_kind=plan.kind,
        cursor_to=cursor_to,
        diff_signature=plan.signature,
    )
    guard = _removal_guard(wh, config, run_id, counts, allow_removals)
    if guard is not None:
        return DiffOutcome(counts=counts, keys=keys, error=guard, plan=plan)
    record_run(
        wh,
        name,
        run_id,
        status="queued",
        added=counts.added,
        changed=counts.changed,
        removed=counts.removed,
    )
    return DiffOutcome(counts=counts, keys=keys, plan=plan)


def _removal_guard(
    wh: Warehouse, config: SyncConfig, run_id: str, counts: DiffCounts, allow: bool
) -> str | None:
    """Stop a run whose removals exceed `guardrails.max_removed_percent` of the synced records:
    its stored diff is dropped and its row fails with why; nothing is sent, state unchanged."""
    limit = config.guardrails.max_removed_percent if config.guardrails else None
    if allow or limit is None or not counts.removed:
        return None
    t = SyncTables(config.name)
    row = wh.fetchone(f"select count(*) from {t.state}")
    problem = guardrails.removal_problem(config, counts.removed, int(row[0]) if row else 0)
    if problem is None:
        return None
    wh.execute(f"delete from {t.diff} where _retl_run_id = ?", [run_id])
    record_run(
        wh,
        config.name,
        run_id,
        status="failed",
        error=problem,
        added=counts.added,
        changed=counts.changed,
        removed=counts.removed,
        finished=True,
    )
    return problem


def replay_problem(wh: Warehouse, config: SyncConfig, run_id: str) -> str | None:
    """Why run `run_id` of the sync cannot be replayed (None when it can)."""
    if diff_stage.stored_counts(wh, config, run_id) is None:
        return str(
            ConfigError(
                config.name,
                "run_id",
                f"run {run_id} has no stored diff to replay (unknown, pruned after "
                f"{config.retention_days} days, or it failed before diffing)",
                f"pick a run from `retl runs {config.name}`",
            )
        )
    return None


@dataclass
class LoadOutcome:
    """What the load stage delivered."""

    result: LoadResult
    status: str
    """`succeeded`, or `partial` when the destination rejected records."""
    run: dict[str, Any]
    """The run's row in `_retl.sync_runs` after the load."""
    pruned: list[str] = field(default_factory=list)
    """Runs dropped past the sync's retention (their partitions should go too)."""
    guardrail: guardrails.RejectedCheck | None = None
    """The rejected share graded, when the sync declares a rejected threshold."""
    guardrail_change: guardrails.LevelChange | None = None
    """The grade's change since the sync's previous graded run (None: unchanged)."""


def load_run(
    wh: Warehouse,
    config: SyncConfig,
    open_destination: Callable[[], AnyDestination],
    run_id: str,
    *,
    replay: bool = False,
    salt: str = "",
    progress: Progress | None = None,
    dagster_run_id: str | None = None,
) -> LoadOutcome:
    """Deliver run `run_id`'s diff; state advances only for acknowledged records.

    `replay` (or a run that already sent records) gets fresh batch ids from `salt`, so a
    destination that drops duplicate batch ids still receives the resend. A failure is
    recorded on the run's row, then raised.
    """
    name = config.name
    record_run(wh, name, run_id, status="in_progress", dagster_run_id=dagster_run_id)
    replay = replay or delivered_before(wh, name, run_id)
    try:
        with open_destination() as destination:
            result = load(
                wh, config, destination, run_id, progress=progress, salt=salt if replay else ""
            )
    except Exception as exc:
        record_run(wh, name, run_id, status="failed", error=str(exc)[:2000], finished=True)
        raise
    status = "partial" if result.total_rejected else "succeeded"
    record_run(
        wh,
        name,
        run_id,
        status=status,
        succeeded=result.total_succeeded,
        rejected=result.total_rejected,
        identified=result.identified,
        matched=result.matched,
        match_rate=result.match_rate,
        **{f"{stage}_s": seconds for stage, seconds in result.stage_s.items()},
        finished=True,
    )
    run = get_run(wh, name, run_id) or {}
    sent = result.total_succeeded + result.total_rejected
    check = guardrails.rejected_check(config.guardrails, result.total_rejected, sent)
    change = guardrails.record_level(wh, name, check, run_id) if check else None
    pruned = prune(wh, name, config.retention_days)
    return LoadOutcome(result, status, run, pruned, check, change)


def plan(wh: Warehouse, config: SyncConfig, samples: int = 3) -> preview.Plan:
    """The next run's counts and sample payloads; nothing is sent, state is unchanged."""
    return preview.plan(wh, config, model_select(config), samples)


def describe_plan(config: SyncConfig, p: preview.Plan) -> list[str]:
    """A plan in words: a summary line, then one line per sample payload."""
    counts = ", ".join(
        f"{n} {op}" + ("" if op in p.sent_ops else " (not sent)") for op, n in p.counts.items()
    )
    how = ""
    if p.diff.incremental and config.incremental:
        how = f" (incremental diff: {config.incremental.cursor} >= {p.diff.cursor_from})"
    elif p.diff.reason:
        how = f" (full diff: {p.diff.reason})"
    lines = [
        f"plan for sync {config.name} ({config.mode}, delete_behavior "
        f"{config.delete_behavior}): {p.rows_queried} rows queried{how}, {counts}. "
        "Nothing was sent."
    ]
    for op, records in p.samples.items():
        lines += [f"  {op}: {json.dumps(r, default=str)}" for r in records]
    return lines


@dataclass
class RowTestOutcome:
    record: Record
    answer: BatchResult
    exchanges: list[httpx.Response]
    """The HTTP requests and answers, for destinations that speak HTTP."""

    @property
    def rejected(self) -> str | None:
        return self.answer.rejected.get(self.record.key)


def send_test_row(
    wh: Warehouse, config: SyncConfig, destination: AnyDestination, row_id: str, send_as: str
) -> RowTestOutcome:
    """Send the model's row `row_id` as `send_as` for real; the sync's state is not touched."""
    client = getattr(destination, "client", None)
    if isinstance(client, HttpClient):
        client.exchanges = []
    record, answer = preview.send_one_row(
        wh, config, model_select(config), destination, row_id, send_as
    )
    exchanges = list(client.exchanges or []) if isinstance(client, HttpClient) else []
    return RowTestOutcome(record, answer, exchanges)


def reset(wh: Warehouse, config: SyncConfig) -> int:
    """Forget what the sync delivered; returns how many records it forgets."""
    return reset_state(wh, config.name)
