"""Syncs that run themselves: a schedule tick and a model update each add one run partition and
request exactly it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import SyncDisabled, run_sync
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import WEBHOOK_DESTINATION, defs_from_yaml
from retl_dagster_tests.test_sync_e2e import make_customers

SQL_SYNC = """
name: pro_hook
model: {sql: "select id, email, plan from customers where plan = 'pro'"}
primary_key: id
destination: hook
mappings: [{from: email, to: email}]
"""


def test_a_schedule_tick_adds_and_requests_one_partition(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 9)
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION,
        SQL_SYNC + "schedule: {days: [monday], at: '09:30', timezone: Europe/Paris}\n",
    )
    schedule = defs.resolve_schedule_def("retl_pro_hook_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 9 * * 1", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    request = schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
    assert request.partition_key.startswith("20261123T083000Z-")
    assert instance.get_dynamic_partitions("retl_pro_hook_runs") == [request.partition_key]
    result = defs.resolve_job_def("sync_pro_hook").execute_in_process(
        instance=instance, partition_key=request.partition_key
    )
    assert result.success and len(receiver.delivered()) == 3


def test_a_model_update_starts_the_sync(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 6)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SQL_SYNC + "run_on_model_update: true\n")
    sensor = defs.resolve_sensor_def("retl_pro_hook_on_model_update")
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    [nothing] = list(sensor(context))
    assert isinstance(nothing, dg.SkipReason)  # no new model data yet
    model = defs.resolve_assets_def(dg.AssetKey(["retl", "pro_hook", "model"]))
    assert dg.materialize([model], instance=instance).success
    [result] = list(
        sensor(
            dg.build_sensor_context(
                instance=instance, cursor=context.cursor, repository_def=defs.get_repository_def()
            )
        )
    )
    [request] = result.run_requests
    [add] = result.dynamic_partitions_requests
    assert add.partition_keys == [request.partition_key]


def test_a_disabled_sync_has_its_schedule_stopped(warehouse_path: Path) -> None:
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION, SQL_SYNC + "schedule: {interval: 15m}\nenabled: false\n"
    )
    schedule = defs.resolve_schedule_def("retl_pro_hook_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_an_interval_cron_cannot_say_is_refused() -> None:
    with pytest.raises(Exception, match="interval '7m': use minutes dividing an hour"):
        defs_from_yaml(WEBHOOK_DESTINATION, SQL_SYNC + "schedule: {interval: 7m}\n")


def test_a_disabled_sync_cannot_be_run_by_hand(
    instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SQL_SYNC + "enabled: false\n")
    with pytest.raises(SyncDisabled, match="sync pro_hook is disabled"):
        run_sync(defs, "pro_hook", instance)
    assert instance.get_runs() == []
