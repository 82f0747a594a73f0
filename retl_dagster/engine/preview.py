"""Look before sending: `plan` (the next run's counts and sample payloads, nothing sent) and
`test_row` (one row, sent for real, state untouched)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from retl_dagster.common.settings import STATE_SCHEMA
from retl_dagster.destinations.base import AnyDestination, Batch, BatchResult, Record
from retl_dagster.engine import diff as diff_stage
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.delivery import OPS, mapper_for, ops_to_send, prepare_destination
from retl_dagster.engine.state import SyncTables, ensure_state_schema
from retl_dagster.engine.warehouse import Warehouse, quote_ident


@dataclass
class Plan:
    rows_queried: int
    counts: dict[str, int]
    """added / changed / removed the next run would find."""
    sent_ops: list[str]
    """Which of them the sync's mode and delete behaviour would send."""
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per op, a few records as the destination would receive them."""
    diff: diff_stage.DiffPlan = field(default_factory=lambda: diff_stage.DiffPlan("full"))
    """Full or incremental, as the next run will diff."""


def _records(
    wh: Warehouse,
    config: SyncConfig,
    sql: str,
    params: list[Any],
    limit: int | None = None,
    destination: AnyDestination | None = None,
) -> list[Record]:
    mapper = mapper_for(config, destination)
    out: list[Record] = []
    for rb in wh.stream(sql + (f" limit {limit}" if limit else ""), params, batch_size=1000):
        out += [mapper.record(r["_retl_op"], r["_retl_key"], r) for r in rb.to_pylist()]
    return out


def plan(wh: Warehouse, config: SyncConfig, model_sql: str, samples: int = 3) -> Plan:
    """Compute the next run's diff under a throwaway run id, read it, and remove it again. An
    incremental sync's plan diffs as its next run will: in full or from the cursor."""
    kind, model_sql = diff_stage.rows_to_diff(wh, config, model_sql)
    report = diff_stage.check_keys(wh, config, model_sql)
    if not report.ok:
        raise ConfigError(
            config.name,
            "primary_key",
            report.describe(config.name, config.primary_key).split(": ", 2)[-1],
            "fix the model",
        )
    run_id = "plan-" + secrets.token_hex(4)
    t = SyncTables(config.name)
    counts = diff_stage.compute_diff(
        wh, config, model_sql, run_id, report.rows, incremental=kind.incremental
    )
    try:
        cols = ", ".join(quote_ident(c) for c in config.source_columns())
        result = Plan(
            rows_queried=counts.rows_queried,
            counts={"added": counts.added, "changed": counts.changed, "removed": counts.removed},
            sent_ops=ops_to_send(config),
            diff=kind,
        )
        for op in OPS:
            records = _records(
                wh,
                config,
                f"select _retl_op, _retl_key, _retl_match, _retl_dest_id, {cols} from {t.diff} "
                "where _retl_run_id = ? and _retl_op = ? order by _retl_key",
                [run_id, op],
                samples,
            )
            result.samples[op] = [{"op": r.op, "id": r.key, "fields": r.fields} for r in records]
        return result
    finally:
        wh.execute(f"delete from {t.diff} where _retl_run_id = ?", [run_id])


def send_one_row(
    wh: Warehouse,
    config: SyncConfig,
    model_sql: str,
    destination: AnyDestination,
    key: str,
    as_op: str = "added",
) -> tuple[Record, BatchResult]:
    """Send the model's row `key` as `as_op`; the sync's state is not touched."""
    ensure_state_schema(wh, config.name)
    t = SyncTables(config.name)
    pk = quote_ident(config.primary_key)
    cols = ", ".join(f"m.{quote_ident(c)}" for c in config.source_columns())
    match = f"cast(m.{quote_ident(config.match.column)} as varchar)" if config.match else "null"
    key_sql = f"cast(m.{pk} as varchar)"
    # What an earlier run learnt about the record (its destination id), once a diff made state.
    state = (
        f"(select cast(_retl_key as varchar) as _retl_key, _retl_match, _retl_dest_id "
        f"from {t.state})"
        if wh.relation_exists(f"{STATE_SCHEMA}.{config.name}__state")
        else "(select null as _retl_key, null as _retl_match, null as _retl_dest_id)"
    )
    rows = _records(
        wh,
        config,
        f"select ? as _retl_op, {key_sql} as _retl_key, "
        f"coalesce({match}, s._retl_match) as _retl_match, s._retl_dest_id, {cols} "
        f"from ({model_sql}) as m left join {state} as s on s._retl_key = {key_sql} "
        f"where {key_sql} = ?",
        [as_op, key],
        destination=destination,
    )
    if not rows:
        raise ConfigError(
            config.name,
            "primary_key",
            f"no row with {config.primary_key} = {key!r} in the model",
            "pass an id the model returns",
        )
    record = rows[0]
    prepare_destination(destination, config, wh.columns_of(model_sql))
    batch = Batch(
        config.name,
        "test-row",
        config.mode,
        config.object,
        [record],
        config.match.field if config.match else None,
        fill_only=config.fill_only(),
    )
    return record, destination.deliver(batch)
