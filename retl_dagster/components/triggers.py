"""What starts a sync by itself: its schedule, new data in its model asset, a change in a
warehouse table, or the end of the syncs it follows (`after:`, a sequence).

Each trigger adds that run's partition and requests it in the same evaluation: an automation
condition over a dynamic partition set would request every partition ever made. A disabled
sync's triggers start stopped, and request nothing even if someone turns them on."""

# No `from __future__ import annotations`: Dagster inspects the context parameters' types.
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
from dagster_dbt.cloud_v2.resources import DbtCloudWorkspace

from retl_dagster.components.alerts import GUARDRAIL_TAG, AlertChannels, deliver_alert
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.notify import RunAlert
from retl_dagster.engine.runs import new_run_id
from retl_dagster.engine.warehouse import Warehouse

TRIGGER_TAG = "retl/trigger"
SEQUENCE_TAG = "retl/sequence"
"""The sequence run a sync run belongs to: the run id of the sequence's first sync."""
FRESHNESS_LOCK_WAIT_S = 5.0
FIVETRAN_CONNECTOR = "dagster-fivetran/connector_id"  # FivetranMetadataSet's keys
FIVETRAN_COMPLETED_AT = "dagster-fivetran/sync_completed_at"


def job_name(sync: str) -> str:
    """The job that runs a sync: `sync_<name>`."""
    return f"sync_{sync}"


def _disabled(name: str) -> dg.SkipReason:
    return dg.SkipReason(f"sync {name} is disabled (enabled: false in its defs.yaml)")


def sequence_of(run: dg.DagsterRun) -> str:
    """A run's sequence: the one it was started in, else its own (it heads a new one)."""
    return run.tags.get(SEQUENCE_TAG) or run.tags.get("dagster/partition") or run.run_id


def sequence_run_key(sequence: str, sync: str) -> str:
    """The partition of `sync` in `sequence`: derived, not random, so the two predecessors of
    a join finishing at once ask for the same partition (and run) instead of two."""
    stamp = sequence.split("-", 1)[0]
    return f"{stamp}-{hashlib.sha256(f'{sequence}/{sync}'.encode()).hexdigest()[:6]}"


def over_max_guardrail(run: dg.DagsterRun) -> bool:
    """A run that succeeded with its rejected share above `max_rejected_percent`: a sequence
    stops after it, as after a failure."""
    return run.tags.get(GUARDRAIL_TAG) == "error"


def succeeded_in(instance: dg.DagsterInstance, sync: str, sequence: str) -> bool:
    """Whether `sync` finished successfully in `sequence` (as its first sync or a follower),
    within its guardrails."""
    for tags in ({SEQUENCE_TAG: sequence}, {"dagster/partition": sequence}):
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job_name(sync), statuses=[dg.DagsterRunStatus.SUCCESS], tags=tags
            ),
            limit=5,
        )
        if any(not over_max_guardrail(r.dagster_run) for r in records):
            return True
    return False


def sync_triggers(
    config: SyncConfig,
    job: Any,  # the sync job, as define_asset_job returns it
    partitions: dg.DynamicPartitionsDefinition,
    model_key: dg.AssetKey,
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    name = config.name
    enabled = config.enabled
    status = dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED
    sensor_status = dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED
    partitions_name = partitions.name or ""
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []

    def request(key: str, trigger: str, **tags: str) -> dg.RunRequest:
        return dg.RunRequest(run_key=key, partition_key=key, tags={TRIGGER_TAG: trigger, **tags})

    if config.schedule is not None:
        spec = config.schedule

        @dg.schedule(
            name=f"retl_{name}_schedule",
            cron_schedule=spec.as_cron(),
            execution_timezone=spec.timezone,
            job=job,
            default_status=status,
            description=f"Runs sync {name} ({spec.as_cron()} {spec.timezone}).",
        )
        def sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            if not enabled:
                return _disabled(name)
            when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
            key = new_run_id(when.astimezone(dt.UTC))
            # A schedule cannot return partition requests: add the partition directly.
            context.instance.add_dynamic_partitions(partitions_name, [key])
            return request(key, "schedule")

        schedules.append(sync_schedule)

    if config.run_on_model_update:

        @dg.sensor(
            job=job,
            name=f"retl_{name}_on_model_update",
            default_status=sensor_status,
            description=f"Runs sync {name} when {model_key.to_user_string()} is materialised. "
            "Its first tick is a baseline: a materialisation from before it is not a change.",
        )
        def on_model_update(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=model_key), ascending=False, limit=1
            ).records
            latest = str(records[0].storage_id if records else 0)
            if context.cursor is None:
                # `dagster dev` on a project built earlier must not resend everything.
                return dg.SensorResult(
                    skip_reason="baseline: the model's materialisations so far are not changes; "
                    "the next one starts the sync",
                    cursor=latest,
                )
            if int(latest) <= int(context.cursor):
                return dg.SensorResult(skip_reason="no new materialisation", cursor=context.cursor)
            if not enabled:
                return dg.SensorResult(skip_reason=_disabled(name).skip_message, cursor=latest)
            key = new_run_id()
            return dg.SensorResult(
                run_requests=[request(key, "model_update")],
                dynamic_partitions_requests=[partitions.build_add_request([key])],
                cursor=latest,
            )

        sensors.append(on_model_update)

    watch = config.run_on_table_change
    freshness_sql = config.freshness_sql()
    if watch is not None and freshness_sql is not None:

        @dg.sensor(
            name=f"retl_{name}_on_table_change",
            job=job,
            minimum_interval_seconds=watch.every_s,
            default_status=sensor_status,
            description=(
                f"Runs sync {name} when the answer to `{freshness_sql}` changes "
                f"(asked every {watch.every_s} s; the cursor holds the last answer)."
            ),
        )
        def on_table_change(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            if not enabled:
                return dg.SensorResult(skip_reason=_disabled(name))
            try:
                with Warehouse(read_only=True, lock_wait_s=FRESHNESS_LOCK_WAIT_S) as wh:
                    row = wh.fetchone(freshness_sql)
            except Exception as exc:  # busy or unreachable: ask again at the next tick
                return dg.SensorResult(skip_reason=f"could not ask the warehouse: {exc}")
            value = "null" if row is None or row[0] is None else str(row[0])
            seen = dg.AssetObservation(
                asset_key=model_key, metadata={"retl/freshness": value, "query": freshness_sql}
            )
            if context.cursor is None:
                # The first answer is the baseline: nothing is known to have changed yet.
                return dg.SensorResult(
                    skip_reason=f"baseline: {value}", cursor=value, asset_events=[seen]
                )
            if value == context.cursor:
                return dg.SensorResult(skip_reason=f"unchanged: {value}")
            key = new_run_id()
            return dg.SensorResult(
                run_requests=[request(key, "table_change")],
                dynamic_partitions_requests=[partitions.build_add_request([key])],
                cursor=value,
                asset_events=[seen],
            )

        sensors.append(on_table_change)

    if config.run_after is not None:
        sensors.append(_run_after_sensor(config, job, partitions, request, sensor_status))
    if config.after:
        sensors += _sequence_sensors(config, job, partitions_name, request, sensor_status)
    return schedules, sensors


DBT_CLOUD_RESOURCE = "retl_dbt_cloud"  # the sensor's parameter of that name
_DBT_CLOUD_RUN = re.compile(r"/runs/(\d+)")


def _upstream_runs(
    config: SyncConfig,
    records: Sequence[Any],
    dbt_cloud: DbtCloudWorkspace | None,
    since: float | None = None,
) -> list[str]:
    """The finished upstream runs (one key each) that `run_after` names, in new
    materialisations recorded by dagster-dbt's / dagster-fivetran's polling sensor; a Fivetran
    sync completed before `since` (the sensor's baseline, epoch seconds) is not new."""
    after = config.run_after
    assert after is not None
    found: list[str] = []
    job_of: dict[int, Any] = {}
    for record in records:
        mat = record.event_log_entry.asset_materialization
        meta = {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}
        key = None
        if after.fivetran_connector and meta.get(FIVETRAN_CONNECTOR) == after.fivetran_connector:
            completed = meta.get(FIVETRAN_COMPLETED_AT)
            # dagster-fivetran's polling sensor records, on its first tick, each connector's
            # last sync however old: when that tick comes after ours, it is not a new sync.
            if since is not None and isinstance(completed, int | float) and completed < since:
                continue
            key = f"fivetran:{after.fivetran_connector}:{completed}"
        elif after.dbt_cloud_job and dbt_cloud is not None:
            m = _DBT_CLOUD_RUN.search(str(meta.get("run_url") or ""))
            if m:
                run_id = int(m.group(1))
                if run_id not in job_of:  # one question per dbt Cloud run
                    job_of[run_id] = (
                        dbt_cloud.get_client().get_run_details(run_id).get("job_definition_id")
                    )
                if job_of[run_id] == after.dbt_cloud_job:
                    key = f"dbt_cloud:{run_id}"
        if key and key not in found:
            found.append(key)
    return found


def _run_after_sensor(
    config: SyncConfig,
    job: Any,
    partitions: dg.DynamicPartitionsDefinition,
    request: Callable[..., dg.RunRequest],
    sensor_status: dg.DefaultSensorStatus,
) -> dg.SensorDefinition:
    """`run_after`: one run per finished dbt Cloud job run / Fivetran connector sync, seen in
    the materialisations their polling sensor records (as `run_on_model_update` sees its
    model's)."""
    name, enabled, after = config.name, config.enabled, config.run_after
    assert after is not None
    what = (
        f"dbt Cloud job {after.dbt_cloud_job}"
        if after.dbt_cloud_job
        else f"Fivetran connector {after.fivetran_connector}"
    )

    def evaluate(
        context: dg.SensorEvaluationContext, dbt_cloud: DbtCloudWorkspace | None
    ) -> dg.SensorResult:
        # The cursor: `<last storage id seen>@<baseline time>` (a cursor from before the time
        # was kept is only the id).
        seen, _, since_s = (context.cursor or "0").partition("@")
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                after_cursor=int(seen) or None,
            ),
            ascending=True,
            limit=1000,
        )
        since = float(since_s) if since_s else None
        if context.cursor is None:
            since = dt.datetime.now(dt.UTC).timestamp()
        last = str(records[-1].storage_id) if records else seen
        latest = last if since is None else f"{last}@{since}"
        if context.cursor is None:
            return dg.SensorResult(
                skip_reason=f"baseline: runs of {what} so far are not new", cursor=latest
            )
        runs = _upstream_runs(config, records, dbt_cloud, since)
        if not runs:
            return dg.SensorResult(skip_reason=f"no new run of {what}", cursor=latest)
        if not enabled:
            return dg.SensorResult(skip_reason=_disabled(name).skip_message, cursor=latest)
        keys = {upstream: new_run_id() for upstream in runs}
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=upstream,
                    partition_key=key,
                    tags={TRIGGER_TAG: f"run_after:{upstream}"},
                )
                for upstream, key in keys.items()
            ],
            dynamic_partitions_requests=[partitions.build_add_request(list(keys.values()))],
            cursor=latest,
        )

    description = f"Runs sync {name} when {what} finishes (seen by its polling sensor)."
    if after.dbt_cloud_job:

        @dg.sensor(
            name=f"retl_{name}_run_after",
            job=job,
            default_status=sensor_status,
            description=description,
        )
        def after_dbt_cloud(
            context: dg.SensorEvaluationContext, retl_dbt_cloud: DbtCloudWorkspace
        ) -> dg.SensorResult:
            return evaluate(context, retl_dbt_cloud)

        return after_dbt_cloud

    @dg.sensor(
        name=f"retl_{name}_run_after",
        job=job,
        default_status=sensor_status,
        description=description,
    )
    def after_fivetran(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate(context, None)

    return after_fivetran


def _sequence_sensors(
    config: SyncConfig,
    job: Any,
    partitions_name: str,
    request: Callable[..., dg.RunRequest],
    sensor_status: dg.DefaultSensorStatus,
) -> list[dg.SensorDefinition]:
    """`after: [...]`: run once every sync it follows succeeded in the same sequence run; when
    one of them fails, the sequence stops here (and says so to the sync's alert channels)."""
    name = config.name
    after = list(config.after)
    watched = {job_name(s) for s in after}
    enabled = config.enabled

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=f"retl_{name}_after",
        request_job=job,
        default_status=sensor_status,
        description=f"Runs sync {name} when {', '.join(after)} succeeded in one sequence run.",
    )
    def after_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
        run = context.dagster_run
        if run.job_name not in watched:
            return dg.SkipReason(f"{run.job_name} does not precede sync {name}")
        if not enabled:
            return _disabled(name)
        sequence = sequence_of(run)
        if over_max_guardrail(run):
            return dg.SkipReason(
                f"sequence {sequence} stopped: sync {run.tags.get('retl/sync', run.job_name)} "
                "rejected more than its guardrails.max_rejected_percent"
            )
        waiting = [s for s in after if not succeeded_in(context.instance, s, sequence)]
        if waiting:
            return dg.SkipReason(f"sequence {sequence}: waiting for {', '.join(waiting)}")
        key = sequence_run_key(sequence, name)
        context.instance.add_dynamic_partitions(partitions_name, [key])
        return request(
            key, f"after:{run.tags.get('retl/sync', run.job_name)}", **{SEQUENCE_TAG: sequence}
        )

    sensors: list[dg.SensorDefinition] = [after_sensor]
    if config.alerts and (config.alerts.slack or config.alerts.email):

        @dg.run_failure_sensor(
            name=f"retl_{name}_after_failed_alert",
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Alerts when a sync that {name} follows fails (the sequence stops).",
        )
        def sequence_stopped(
            context: dg.RunFailureSensorContext, retl_alerts: AlertChannels
        ) -> None:
            run = context.dagster_run
            if run.job_name not in watched or run.tags.get("dagster/will_retry") == "true":
                return
            failed = run.tags.get("retl/sync", run.job_name)
            sequence = sequence_of(run)
            deliver_alert(
                config,
                retl_alerts,
                RunAlert(
                    name,
                    "stopped",
                    sequence,
                    run.run_id,
                    {},
                    [
                        f"sequence {sequence} stopped: sync {failed} failed (Dagster run "
                        f"{run.run_id}), so sync {name} and the syncs after it did not run. "
                        f"Fix {failed} and run it again: the syncs after it follow."
                    ],
                ),
            )

        sensors.append(sequence_stopped)
    return sensors
