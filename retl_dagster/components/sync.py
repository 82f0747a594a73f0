"""The Sync component: one sync's YAML -> model asset, run-partitioned diff and load assets, job."""
# No `from __future__ import annotations`: Dagster inspects the real type of `context`.

import re
import time
from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
import pydantic

from retl_dagster.common.encoding import to_json_value
from retl_dagster.common.settings import PROJECT_ROOT, STATE_SCHEMA, strict_definitions
from retl_dagster.components.alerts import GUARDRAIL_CHANGE_TAG, GUARDRAIL_TAG, alert_sensors
from retl_dagster.components.dbt_keys import dbt_asset_key
from retl_dagster.components.destination_resources import DestinationResource, resource_key
from retl_dagster.components.metadata import (
    CONFIG_METADATA_KEY,
    load_definition_metadata,
    load_materialization_metadata,
    warehouse_kind,
)
from retl_dagster.components.pools import destination_pool, warehouse_pool
from retl_dagster.components.scaffold import SyncScaffolder
from retl_dagster.components.triggers import job_name, sync_triggers
from retl_dagster.destinations.http import format_exchange
from retl_dagster.engine import guardrails, stages
from retl_dagster.engine.config import SyncConfig, SyncDeclarationError, explain
from retl_dagster.engine.delivery import LoadResult, Progress
from retl_dagster.engine.model_sql import sql_reads
from retl_dagster.engine.state import SyncTables
from retl_dagster.engine.warehouse import Warehouse

REPLAY_TAG = "retl/replay_of"
"""Run tag: this run resends every record of the named earlier run."""
PROGRESS_LOG_EVERY_S = 5.0

ProgressListener = Callable[[str, int, int], None]
progress_listeners: list[ProgressListener] = []
"""Called with (sync, done, total) during a load; `retl sync` draws its progress bar from this."""


def partitions_def_name(sync: str) -> str:
    # Dynamic partition sets are instance-wide: one per sync.
    return f"retl_{sync}_runs"


def diff_key(sync: str) -> dg.AssetKey:
    return dg.AssetKey(["retl", sync, "diff"])


def load_key(sync: str) -> dg.AssetKey:
    return dg.AssetKey(["retl", sync, "load"])


def model_key(config: SyncConfig) -> dg.AssetKey:
    src = config.model
    if src.dbt:
        return dbt_asset_key(src.dbt)  # the key the project's DagsterDbtTranslator gives it
    if src.table:
        return dg.AssetKey(["warehouse", *src.table.split(".")])
    return dg.AssetKey(["retl", config.name, "model"])


def read_key(read: tuple[str, ...]) -> dg.AssetKey:
    """The asset of what an inline SQL model reads: a dbt model's (the key the project's
    DagsterDbtTranslator gives it) or a warehouse table's (the key a `table:` model gets)."""
    if read[0] == "dbt":
        return dbt_asset_key(read[1])
    return dg.AssetKey(["warehouse", *read])


def table_model_spec(table: str) -> dg.AssetSpec:
    """The asset of a warehouse table that syncs read. Every sync on the table declares this
    same spec, with nothing of its own in it: Dagster merges identical specs into one asset, so
    any number of syncs fan out from one model (a spec that differed per sync would make Dagster
    refuse the code location for "conflicting AssetSpecs with the same key")."""
    return dg.AssetSpec(
        key=dg.AssetKey(["warehouse", *table.split(".")]),
        group_name="warehouse",
        kinds={warehouse_kind(), "table"},
        description=f"Warehouse table {table}, read by retl syncs (see its downstream assets).",
    )


def _fail(message: str) -> dg.Failure:
    return dg.Failure(description=message)


def _load_metadata(result: LoadResult, status: str, run: dict[str, Any]) -> dict[str, Any]:
    md: dict[str, Any] = {
        "status": status,
        **{
            k: dg.MetadataValue.int(int(run.get(k) or 0))
            for k in ("rows_queried", "added", "changed", "removed")
        },
        "planned": dg.MetadataValue.int(result.planned),
        "succeeded": dg.MetadataValue.int(result.total_succeeded),
        "rejected": dg.MetadataValue.int(result.total_rejected),
        "skipped": dg.MetadataValue.int(sum(result.skipped.values())),
        "batches": dg.MetadataValue.int(result.batches),
        "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
        # Where the run's time went: the diff step's stages from its row, the load's own.
        "stage_seconds": dg.MetadataValue.json(
            {
                **{
                    k: round(float(run[f"{k}_s"]), 3)
                    for k in ("query", "diff")
                    if run.get(f"{k}_s") is not None
                },
                **{k: round(v, 3) for k, v in result.stage_s.items()},
            }
        ),
    }
    if result.identified is not None:
        md["identified"] = dg.MetadataValue.int(result.identified)
        if result.matched is not None:
            md["matched"] = dg.MetadataValue.int(result.matched)
        if result.match_rate is not None:
            md["match_rate"] = dg.MetadataValue.float(round(result.match_rate, 4))
    for op in ("added", "changed", "removed"):
        md[f"{op}_succeeded"] = dg.MetadataValue.int(result.succeeded[op])
        md[f"{op}_rejected"] = dg.MetadataValue.int(result.rejected[op])
    if result.rejected_samples:
        lines = ["| id | op | error | payload | what to do |", "|---|---|---|---|---|"]
        for s in result.rejected_samples:
            cells = [str(s["id"]), s["op"], str(s["error"]), str(s["payload"]), s["action"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|")[:300] for c in cells) + " |")
        md["rejected_samples"] = dg.MetadataValue.md("\n".join(lines))
    if result.warned:
        md["warned"] = dg.MetadataValue.int(result.warned)
        lines = ["| id | op | sent without |", "|---|---|---|"]
        for w in result.warning_samples:
            cells = [str(w["id"]), w["op"], str(w["warning"])]
            lines.append("| " + " | ".join(c.replace("|", "\\|")[:300] for c in cells) + " |")
        md["warning_samples"] = dg.MetadataValue.md("\n".join(lines))
    return md


def _progress_logger(context: dg.AssetExecutionContext, name: str) -> Progress:
    """Progress in the run's logs every few seconds, and to `retl sync`'s progress bar."""
    last_log = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last_log[0] >= PROGRESS_LOG_EVERY_S:
            last_log[0] = now
            pct = 100.0 * done / total if total else 100.0
            context.log.info(f"sync {name}: {done}/{total} records delivered ({pct:.0f}%)")
        for listener in progress_listeners:
            listener(name, done, total)

    return progress


def _diff_result(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    check_name: str,
    outcome: stages.DiffOutcome,
) -> dg.MaterializeResult:
    """The diff stage's outcome as Dagster sees it: metadata and the blocking key check."""
    name = config.name
    if outcome.keys is not None and not outcome.keys.ok:
        keys = outcome.keys
        context.log.error(outcome.error or "")
        return dg.MaterializeResult(
            metadata={"rows_queried": dg.MetadataValue.int(keys.rows), "error": outcome.error},
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_name,
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=outcome.error,
                    metadata={
                        "null_keys": dg.MetadataValue.int(keys.null_keys),
                        "duplicate_keys": dg.MetadataValue.int(keys.duplicate_keys),
                        "duplicate_samples": dg.MetadataValue.json(
                            [{"key": k, "count": n} for k, n in keys.duplicate_samples]
                        ),
                    },
                )
            ],
        )
    if outcome.error is not None:
        raise _fail(outcome.error)
    counts = outcome.counts
    assert counts is not None
    if outcome.replay_of is not None:
        context.log.info(
            f"sync {name}: replaying the {counts.total} records of run {outcome.replay_of}"
        )
        return dg.MaterializeResult(
            metadata={
                "replay_of": outcome.replay_of,
                "added": counts.added,
                "changed": counts.changed,
                "removed": counts.removed,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_name,
                    passed=True,
                    description=f"replay: keys were checked when run {outcome.replay_of} diffed",
                )
            ],
        )
    plan = outcome.plan
    incremental = plan is not None and plan.incremental
    how = ""
    if plan is not None and plan.incremental and config.incremental:
        how = f" (incremental diff: {config.incremental.cursor} >= {plan.cursor_from})"
    elif plan is not None and plan.reason:
        how = f" (full diff: {plan.reason})"
    context.log.info(
        f"sync {name}: {counts.rows_queried} rows queried, {counts.added} added, "
        f"{counts.changed} changed, {counts.removed} removed{how}"
    )
    if config.model.table and not incremental:
        # A warehouse table is no asset retl materialises: its row count as an observation.
        context.log_event(
            dg.AssetObservation(
                asset_key=model_key(config),
                metadata={"dagster/row_count": dg.MetadataValue.int(counts.rows_queried)},
            )
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(counts.total),
            "rows_queried": dg.MetadataValue.int(counts.rows_queried),
            "added": dg.MetadataValue.int(counts.added),
            "changed": dg.MetadataValue.int(counts.changed),
            "removed": dg.MetadataValue.int(counts.removed),
            "diff_table": SyncTables(name).diff,
            **({"diff_kind": plan.kind} if plan is not None and config.incremental else {}),
            **({"cursor_from": plan.cursor_from} if plan is not None and plan.cursor_from else {}),
        },
        check_results=[dg.AssetCheckResult(check_name=check_name, passed=True)],
    )


REJECTED_CHECK = "rejected_records"


def _rejected_check_result(name: str, check: guardrails.RejectedCheck) -> dg.AssetCheckResult:
    """The run's rejected share against the sync's guardrails: passes at or below the warning
    threshold, fails as WARN above it and as ERROR above the maximum."""
    level = check.level
    metadata: dict[str, Any] = {
        "rejected": dg.MetadataValue.int(check.rejected),
        "sent": dg.MetadataValue.int(check.sent),
        "rejected_percent": dg.MetadataValue.float(round(check.percent, 4)),
    }
    if check.warn is not None:
        metadata["warn_rejected_percent"] = dg.MetadataValue.float(float(check.warn))
    if check.max is not None:
        metadata["max_rejected_percent"] = dg.MetadataValue.float(float(check.max))
    return dg.AssetCheckResult(
        check_name=REJECTED_CHECK,
        passed=level == "healthy",
        severity=dg.AssetCheckSeverity.ERROR if level == "error" else dg.AssetCheckSeverity.WARN,
        description=check.describe(name),
        metadata=metadata,
    )


def build_sync_defs(config: SyncConfig, destination_type: str | None = None) -> dg.Definitions:
    """All Dagster definitions of one sync. A function, so each sync closes over its own config.
    `destination_type`: its destination's type, a kind of the load asset."""
    name = config.name
    partitions = dg.DynamicPartitionsDefinition(name=partitions_def_name(name))
    group = f"sync_{name}"
    dest_key = resource_key(config.destination)
    tables = SyncTables(name)
    config_json = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    description = config.description or (
        f"{config.model.kind} model -> {config.destination} ({config.mode})"
    )
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
    wh_pool = warehouse_pool()

    if config.model.sql:
        sql = config.model.sql

        @dg.asset(
            key=model_key(config),
            deps=[read_key(read) for read in sql_reads(sql)],
            group_name=group,
            kinds={warehouse_kind(), "sql"},
            description=f"Inline model of sync {name}: a view `{STATE_SCHEMA}.{name}__model`.",
            pool=wh_pool,
        )
        def sql_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            with Warehouse() as wh:
                wh.execute(f"create schema if not exists {STATE_SCHEMA}")
                wh.replace_view(f'{STATE_SCHEMA}."{name}__model"', sql)
                row = wh.fetchone(f'select count(*) from {STATE_SCHEMA}."{name}__model"')
            return dg.MaterializeResult(metadata={"dagster/row_count": int(row[0]) if row else 0})

        assets.append(sql_model)
    elif config.model.table:
        assets.append(table_model_spec(config.model.table))

    check_name = "primary_key_unique_not_null"

    @dg.asset(
        key=diff_key(name),
        deps=[model_key(config)],
        partitions_def=partitions,
        group_name=group,
        kinds={warehouse_kind(), "retl"},
        description=f"Added/changed/removed rows of one run of sync {name}, computed in the "
        f"warehouse and stored in {tables.diff}. One partition per run.",
        check_specs=[
            dg.AssetCheckSpec(
                check_name,
                asset=diff_key(name),
                blocking=True,
                description=f"'{config.primary_key}' is unique and never null in the model; "
                "a failure stops the run before anything is sent.",
            )
        ],
        metadata={CONFIG_METADATA_KEY: dg.MetadataValue.json(config_json)},
        pool=wh_pool,
    )
    def diff_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        if not context.instance.has_dynamic_partition(
            partitions_def_name(name), context.partition_key
        ):
            # Launched from the UI or GraphQL on a key never added: refuse before anything is
            # recorded, so no run row is left behind.
            raise _fail(
                f"sync {name}: run {context.partition_key!r} is not a partition of "
                f"{partitions_def_name(name)}. Fix: start syncs with `retl sync {name}`, a "
                "schedule or sensor, or add the partition first (addDynamicPartition)"
            )
        with Warehouse() as wh:
            outcome = stages.diff_run(
                wh,
                config,
                context.partition_key,
                replay_of=context.run.tags.get(REPLAY_TAG),
                dagster_run_id=context.run_id,
                allow_removals=context.run.tags.get(guardrails.ALLOW_REMOVALS_TAG, "").lower()
                in ("true", "1", "yes"),
            )
        return _diff_result(context, config, check_name, outcome)

    rejected_specs = (
        [
            dg.AssetCheckSpec(
                REJECTED_CHECK,
                asset=load_key(name),
                description=f"The share of records sent that the destination rejected, against "
                f"sync {name}'s guardrails (warn_rejected_percent, max_rejected_percent).",
            )
        ]
        if config.guardrails is not None and config.guardrails.checks_rejected
        else []
    )

    @dg.asset(
        key=load_key(name),
        deps=[diff_key(name)],
        partitions_def=partitions,
        group_name=group,
        kinds={"retl", warehouse_kind(), *([destination_type] if destination_type else [])},
        description=f"Delivery of one run of sync {name} to destination "
        f"'{config.destination}'; state advances only for acknowledged records.",
        required_resource_keys={dest_key},
        metadata={
            CONFIG_METADATA_KEY: dg.MetadataValue.json(config_json),
            **load_definition_metadata(config),
        },
        pool=destination_pool(config.destination),
        check_specs=rejected_specs,
    )
    def load_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resource: DestinationResource = getattr(context.resources, dest_key)
        with Warehouse() as wh:
            outcome = stages.load_run(
                wh,
                config,
                resource.client,
                context.partition_key,
                replay=REPLAY_TAG in context.run.tags,
                salt=context.run_id,
                progress=_progress_logger(context, name),
                dagster_run_id=context.run_id,
            )
        # The run's outcome as a tag: visible in the UI's run list and filterable.
        context.instance.add_run_tags(context.run_id, {"retl/status": outcome.status})
        for key in outcome.pruned:
            # One partition per run grows forever otherwise: drop those past retention.
            context.instance.delete_dynamic_partition(partitions_def_name(name), key)
        if outcome.pruned:
            context.log.info(
                f"sync {name}: pruned {len(outcome.pruned)} run(s) older than "
                f"{config.retention_days} days"
            )
        result = outcome.result
        if result.warned:
            context.log.warning(
                f"sync {name}: {result.warned} record(s) delivered without a field the "
                "destination could not take. First: " + str(result.warning_samples[:3])
            )
        if result.total_rejected:
            context.log.warning(
                f"sync {name}: {result.total_rejected} record(s) rejected; they stay pending and "
                "are retried on the next run. First: " + str(result.rejected_samples[:3])
            )
        metadata = _load_metadata(result, outcome.status, outcome.run)
        if result.field_types:  # fields were sent: what, of which types, from which columns
            metadata |= load_materialization_metadata(config, model_key(config), result.field_types)
        checks: list[dg.AssetCheckResult] = []
        if outcome.guardrail is not None:
            # Acknowledged records stay synced whatever the grade: the materialisation stands.
            tags: dict[str, str] = {GUARDRAIL_TAG: outcome.guardrail.level}
            if outcome.guardrail_change is not None:
                change = outcome.guardrail_change
                tags[GUARDRAIL_CHANGE_TAG] = f"{change.before}->{change.after}"
            context.instance.add_run_tags(context.run_id, tags)
            checks.append(_rejected_check_result(name, outcome.guardrail))
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    assets += [diff_asset, load_asset]
    preview_jobs = _preview_jobs(config, dest_key)
    # In process: the two steps run one after the other anyway, and a step process of its own
    # would cost a Python start and a code location load each (BENCHMARKS.md: a UI-launched run
    # 27 s -> 8 s); `retl sync` runs the job in process too.
    job = dg.define_asset_job(
        job_name(name),
        selection=dg.AssetSelection.assets(diff_key(name), load_key(name)),
        partitions_def=partitions,
        description=f"Run sync {name} ({description}): diff, then deliver. One partition a run.",
        tags={"retl/sync": name},
        executor_def=dg.in_process_executor,
    )
    schedules, trigger_sensors = sync_triggers(config, job, partitions, model_key(config))
    sensors = alert_sensors(config, job, diff_key(name), load_key(name)) + trigger_sensors
    return dg.Definitions(
        assets=assets, jobs=[job, *preview_jobs], schedules=schedules, sensors=sensors
    )


# The `model` field shadows Resolvable.model() on instances only; Dagster calls it on the class.
class PlanConfig(dg.Config):
    samples: int = 3
    """Sample payloads per operation."""


class ResetConfig(dg.Config):
    confirm: bool = False
    """Must be true: a reset resends everything on the next run."""


class TestRowConfig(dg.Config):
    row_id: str
    """Primary key of the model row to send."""
    send_as: Literal["added", "changed", "removed"] = "added"


def _preview_jobs(sync: SyncConfig, dest_key: str) -> list[dg.JobDefinition]:
    """`plan_<sync>`, `test_row_<sync>` and `reset_<sync>`: the CLI's plan, test-row and reset,
    launchable from the UI (results in the run's logs and the op's output metadata)."""
    name = sync.name
    wh_pool = warehouse_pool()

    @dg.op(name=f"plan_{name}_op", pool=wh_pool)
    def plan_op(context: dg.OpExecutionContext, config: PlanConfig) -> dg.Output[None]:
        with Warehouse() as wh:
            p = stages.plan(wh, sync, config.samples)
        context.log.info(stages.describe_plan(sync, p)[0])
        return dg.Output(
            None,
            metadata={
                "rows_queried": p.rows_queried,
                **p.counts,
                "samples": dg.MetadataValue.json(p.samples),
            },
        )

    @dg.op(name=f"test_row_{name}_op", required_resource_keys={dest_key}, pool=wh_pool)
    def test_row_op(context: dg.OpExecutionContext, config: TestRowConfig) -> dg.Output[None]:
        resource: DestinationResource = getattr(context.resources, dest_key)
        with Warehouse() as wh, resource.client() as destination:
            outcome = stages.send_test_row(wh, sync, destination, config.row_id, config.send_as)
        record, reason = outcome.record, outcome.rejected
        exchanges = [format_exchange(r, resource.redact) for r in outcome.exchanges]
        context.log.info(
            f"test row {record.key} of sync {name}: "
            + (f"rejected: {resource.redact(reason)}" if reason else "delivered")
        )
        return dg.Output(
            None,
            metadata={
                "result": "rejected" if reason else "delivered",
                "error": resource.redact(reason or ""),
                "record": dg.MetadataValue.json(
                    {"op": record.op, "id": record.key, "fields": to_json_value(record.fields)}
                ),
                "exchange": dg.MetadataValue.md("```\n" + "\n\n".join(exchanges) + "\n```"),
            },
        )

    @dg.op(name=f"reset_{name}_op", pool=wh_pool)
    def reset_op(context: dg.OpExecutionContext, config: ResetConfig) -> dg.Output[None]:
        for warning in sync.reset_warnings():
            context.log.warning(warning)
        if not config.confirm:
            raise dg.Failure(
                description=f"sync {name} not reset: set `confirm: true` in the run config "
                "after reading the warnings above (if any)"
            )
        with Warehouse() as wh:
            n = stages.reset(wh, sync)
        context.log.info(f"sync {name} reset: {n} record(s) forgotten")
        return dg.Output(None, metadata={"forgotten": n})

    @dg.job(
        name=f"reset_{name}",
        executor_def=dg.in_process_executor,
        description=f"Resync full query: forget sync {name}'s "
        "state so its next run sends every row (config: confirm: true).",
    )
    def reset_job() -> None:
        reset_op()

    @dg.job(
        name=f"plan_{name}",
        description=f"Dry run of sync {name}: nothing is sent.",
        executor_def=dg.in_process_executor,
    )
    def plan_job() -> None:
        plan_op()

    @dg.job(
        name=f"test_row_{name}",
        executor_def=dg.in_process_executor,
        description=f"Send one model row of sync {name} (config: row_id); state unchanged.",
    )
    def test_row_job() -> None:
        test_row_op()

    return [plan_job, test_row_job, reset_job]


INVALID_METADATA_KEY = "retl/invalid"
"""On the placeholder asset of a sync whose declaration is broken: the error, for the UI and
`retl status`."""


class InvalidSync(dg.Component):
    """Stands in for a sync whose declaration is broken, outside strict loading: the other syncs
    load, run, schedule and alert; this one shows in the UI, in its own group, with its error,
    and runs nothing."""

    def __init__(self, name: str, error: str, source: str) -> None:
        self.name, self.error, self.source = name, error, source

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return invalid_sync_defs(self.name, self.error, self.source)


def invalid_sync_defs(name: str, error: str, source: str) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            dg.AssetSpec(
                key=load_key(name),
                group_name=f"sync_{name}",
                kinds={"retl"},
                description=f"INVALID: sync {name} does not run until its declaration is fixed "
                f"({source}). {error}",
                metadata={INVALID_METADATA_KEY: error, "retl/source": source},
                tags={"retl/invalid": "true"},
            )
        ]
    )


class _AnyAttributes(pydantic.BaseModel):
    """What Dagster checks a Sync's YAML against before `Sync.load`: anything, so that load can
    check it itself and isolate a broken sync instead of failing the code location. Editors and
    `dg` still see the real schema (a sync's, generated in the same pass so its refs resolve)."""

    model_config = pydantic.ConfigDict(extra="allow")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: Any, handler: pydantic.GetJsonSchemaHandler
    ) -> Any:
        return handler(SyncConfig.__pydantic_core_schema__)


@dg.scaffold_with(SyncScaffolder)
class Sync(dg.Component, dg.Resolvable, SyncConfig):  # type: ignore[misc]
    """A Reverse ETL sync declared in `defs.yaml`."""

    _invalid: str | None = pydantic.PrivateAttr(default=None)
    """Set when the sync does not fit the other declarations (definitions.py)."""
    _destination_type: str | None = pydantic.PrivateAttr(default=None)
    """Its destination's type (a kind of its load asset), from the Destinations component."""

    @classmethod
    def get_model_cls(cls) -> type[pydantic.BaseModel]:
        return _AnyAttributes

    @classmethod
    def load(cls, attributes: pydantic.BaseModel | None, context: dg.ComponentLoadContext) -> Any:
        raw = attributes.model_dump() if attributes is not None else {}
        source = _source(context)
        name = raw.get("name")
        name = name if isinstance(name, str) and name else context.path.name
        # The placeholder names Dagster objects after it: keep it a valid name.
        name = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_") or "unnamed"
        if not name[0].isalpha():
            name = f"sync_{name}"
        try:
            model = pydantic.TypeAdapter(cls.model()).validate_python(raw)
            return super().load(model, context)
        except pydantic.ValidationError as exc:
            error: Exception = SyncDeclarationError(explain(exc, name, source))
        except Exception as exc:  # noqa: BLE001 - any broken declaration is isolated, or raised
            error = exc
        if strict_definitions():
            raise error
        return InvalidSync(name, str(error), source)

    def invalidate(self, error: str) -> None:
        self._invalid = error

    def set_destination_type(self, type_: str | None) -> None:
        self._destination_type = type_ or None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if self._invalid is not None:
            return invalid_sync_defs(self.name, self._invalid, _source(context))
        return build_sync_defs(
            SyncConfig.model_validate(self.model_dump(by_alias=True)), self._destination_type
        )


def _source(context: dg.ComponentLoadContext) -> str:
    """The declaration's file, relative to the project (for messages)."""
    path = context.path / "defs.yaml"
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
