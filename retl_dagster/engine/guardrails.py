"""Guardrails: the share of records a run may see rejected, and of synced records it may remove.

No Dagster here: the diff stage stops a run over `max_removed_percent` before anything is sent;
the load stage grades the rejected share (healthy, warn, error) and keeps each sync's last grade
in `_retl.guardrail_state`, so an alert goes out once per change of grade, across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from retl_dagster.common.settings import STATE_SCHEMA
from retl_dagster.engine.config import Guardrails, SyncConfig
from retl_dagster.engine.warehouse import Warehouse

GUARDRAIL_STATE = f"{STATE_SCHEMA}.guardrail_state"
ALLOW_REMOVALS_TAG = "retl/allow_removals"
"""Run tag: `true` lets this one run remove more than `max_removed_percent`."""

Level = Literal["healthy", "warn", "error"]


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


@dataclass(frozen=True)
class RejectedCheck:
    """A run's rejected share against the sync's thresholds."""

    rejected: int
    sent: int
    warn: float | None
    max: float | None

    @property
    def percent(self) -> float:
        return _pct(self.rejected, self.sent)

    @property
    def level(self) -> Level:
        if self.max is not None and self.percent > self.max:
            return "error"
        if self.warn is not None and self.percent > self.warn:
            return "warn"
        return "healthy"

    def describe(self, sync: str) -> str:
        share = (
            f"{self.percent:.2f}% of the {self.sent} records sent were rejected ({self.rejected})"
        )
        if self.level == "error":
            return (
                f"sync {sync}: {share}, above max_rejected_percent {self.max:g}; the records "
                "acknowledged stay synced, the rejected ones are retried on the next run, and a "
                "sequence stops after this sync"
            )
        if self.level == "warn":
            return f"sync {sync}: {share}, above warn_rejected_percent {self.warn:g}"
        return f"sync {sync}: {share}, within its guardrails"


def rejected_check(guardrails: Guardrails | None, rejected: int, sent: int) -> RejectedCheck | None:
    """The run's rejected share graded, when the sync declares a rejected threshold."""
    if guardrails is None or not guardrails.checks_rejected:
        return None
    return RejectedCheck(
        rejected, sent, guardrails.warn_rejected_percent, guardrails.max_rejected_percent
    )


def removal_problem(config: SyncConfig, removed: int, synced: int) -> str | None:
    """Why a run removing `removed` of the `synced` records must stop (None when it may go on).
    A first run (nothing synced yet) never stops here."""
    limit = config.guardrails.max_removed_percent if config.guardrails else None
    if limit is None or synced == 0 or _pct(removed, synced) <= limit:
        return None
    name = config.name
    return (
        f"sync {name}: stopped before sending anything: {removed} of the {synced} synced "
        f"records ({_pct(removed, synced):.2f}%) left the model, above guardrails."
        f"max_removed_percent {limit:g}; state is unchanged. Fix: check the model (an empty or "
        f"partial table?); if the removals are intended, run once with `retl sync {name} "
        f"--allow-removals`, or launch the run with tag {ALLOW_REMOVALS_TAG}=true"
    )


def ensure_guardrail_state(wh: Warehouse) -> None:
    with wh.ddl_lock():
        wh.execute(f"create schema if not exists {STATE_SCHEMA}")
        wh.execute(
            f"""create table if not exists {GUARDRAIL_STATE} (
                sync varchar not null primary key,
                level varchar not null,
                rejected_percent double precision,
                run_id varchar,
                changed_at timestamptz not null,
                checked_at timestamptz not null)"""
        )


@dataclass(frozen=True)
class LevelChange:
    before: Level
    after: Level


def record_level(wh: Warehouse, sync: str, check: RejectedCheck, run_id: str) -> LevelChange | None:
    """Keep the sync's grade; return the change when it differs from the last run's (a sync
    never graded before counts as healthy, so its first healthy run says nothing)."""
    ensure_guardrail_state(wh)
    row = wh.fetchone(f"select level from {GUARDRAIL_STATE} where sync = ?", [sync])
    before: Level = row[0] if row and row[0] in ("healthy", "warn", "error") else "healthy"
    after = check.level
    changed = before != after
    params = [after, check.percent, run_id, sync]
    if row is None:
        wh.execute(
            f"insert into {GUARDRAIL_STATE} (level, rejected_percent, run_id, sync, changed_at, "
            "checked_at) values (?, ?, ?, ?, current_timestamp, current_timestamp)",
            params,
        )
    else:
        stamp = ", changed_at = current_timestamp" if changed else ""
        wh.execute(
            f"update {GUARDRAIL_STATE} set level = ?, rejected_percent = ?, run_id = ?, "
            f"checked_at = current_timestamp{stamp} where sync = ?",
            params,
        )
    return LevelChange(before, after) if changed else None
