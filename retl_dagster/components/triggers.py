"""What starts a sync by itself: its schedule and, optionally, new data in its model asset.

Each tick adds that run's partition and requests it in the same evaluation: an automation
condition over a dynamic partition set would request every partition ever made."""

# No `from __future__ import annotations`: Dagster inspects the context parameters' types.
import datetime as dt
from typing import Any

import dagster as dg

from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.runs import new_run_id

TRIGGER_TAG = "retl/trigger"


def sync_triggers(
    config: SyncConfig,
    job: Any,  # the sync job, as define_asset_job returns it
    partitions: dg.DynamicPartitionsDefinition,
    model_key: dg.AssetKey,
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    name = config.name
    status = (
        dg.DefaultScheduleStatus.RUNNING if config.enabled else dg.DefaultScheduleStatus.STOPPED
    )
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []
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
        def sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
            when = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
            key = new_run_id(when.astimezone(dt.UTC))
            context.instance.add_dynamic_partitions(partitions.name or "", [key])
            return dg.RunRequest(run_key=key, partition_key=key, tags={TRIGGER_TAG: "schedule"})

        schedules.append(sync_schedule)
    if config.run_on_model_update:

        @dg.asset_sensor(
            asset_key=model_key,
            job=job,
            name=f"retl_{name}_on_model_update",
            default_status=dg.DefaultSensorStatus.RUNNING
            if config.enabled
            else dg.DefaultSensorStatus.STOPPED,
            description=f"Runs sync {name} when {model_key.to_user_string()} is materialised.",
        )
        def on_model_update(
            context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
        ) -> dg.SensorResult:
            key = new_run_id()
            return dg.SensorResult(
                run_requests=[
                    dg.RunRequest(
                        run_key=key, partition_key=key, tags={TRIGGER_TAG: "model_update"}
                    )
                ],
                dynamic_partitions_requests=[partitions.build_add_request([key])],
            )

        sensors.append(on_model_update)
    return schedules, sensors
