"""What starts a sync by itself: its schedule, new data in its model asset, a change in a
warehouse table, or the end of the syncs it follows (`after:`, a sequence).

Each trigger adds that run's partition and requests it in the same evaluation: an automation
condition over a dynamic partition set would request every partition ever made. A disabled
sync's triggers start stopped, and request nothing even if someone turns them on."""

# No `from __future__ import annotations`: Dagster inspects the context parameters' types.
import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import dagster as dg

from retl_dagster.components.alerts import AlertChannels, deliver_alert
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.notify import RunAlert
from retl_dagster.engine.runs import new_run_id
from retl_dagster.engine.warehouse import Warehouse

TRIGGER_TAG = "retl/trigger"
SEQUENCE_TAG = "retl/sequence"
"""The sequence run a sync run belongs to: the run id of the sequence's first sync."""
FRESHNESS_LOCK_WAIT_S = 5.0


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


def succeeded_in(instance: dg.DagsterInstance, sync: str, sequence: str) -> bool:
    """Whether `sync` finished successfully in `sequence` (as its first sync or a follower)."""
    for tags in ({SEQUENCE_TAG: sequence}, {"dagster/partition": sequence}):
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job_name(sync), statuses=[dg.DagsterRunStatus.SUCCESS], tags=tags
            ),
            limit=1,
        )
        if records:
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

    if config.after:
        sensors += _sequence_sensors(config, job, partitions_name, request, sensor_status)
    return schedules, sensors


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
