"""Syncs that run themselves: a schedule tick, a model update, a changed table and the end of
the syncs a sync follows each add one run partition and request exactly it; the sensors and
schedules are evaluated on a real instance, on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.triggers import SEQUENCE_TAG
from retl_dagster.runner import SyncDisabled, run_sync
from retl_dagster_tests.fakes.slack import FakeSlack
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    ALL_WAREHOUSES,
    WEBHOOK_DESTINATION,
    defs_from_yaml,
    evaluate_run_status_sensor,
    sql,
)
from retl_dagster_tests.test_sync_e2e import make_customers

WAREHOUSES = ALL_WAREHOUSES

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
    model = defs.resolve_assets_def(dg.AssetKey(["retl", "pro_hook", "model"]))
    # Built before the sensor first looked (e.g. `dagster dev` on a project built yesterday):
    # the first tick is a baseline, not a change.
    assert dg.materialize([model], instance=instance).success

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    baseline = tick(None)
    assert not baseline.run_requests and "baseline" in str(baseline.skip_reason)
    quiet = tick(baseline.cursor)
    assert not quiet.run_requests and quiet.cursor == baseline.cursor
    assert dg.materialize([model], instance=instance).success
    result = tick(quiet.cursor)
    [request] = result.run_requests
    [add] = result.dynamic_partitions_requests
    assert add.partition_keys == [request.partition_key]
    assert not tick(result.cursor).run_requests  # the same materialisation starts one run


def test_a_disabled_sync_has_its_schedule_stopped(warehouse_path: Path) -> None:
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION, SQL_SYNC + "schedule: {interval: 15m}\nenabled: false\n"
    )
    schedule = defs.resolve_schedule_def("retl_pro_hook_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_an_interval_cron_cannot_say_is_refused() -> None:
    with pytest.raises(Exception, match="interval '7m' cannot be a schedule"):
        defs_from_yaml(WEBHOOK_DESTINATION, SQL_SYNC + "schedule: {interval: 7m}\n")


def test_a_disabled_sync_cannot_be_run_by_hand(
    instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SQL_SYNC + "enabled: false\n")
    with pytest.raises(SyncDisabled, match="sync pro_hook is disabled"):
        run_sync(defs, "pro_hook", instance)
    assert instance.get_runs() == []


def test_a_disabled_sync_requests_nothing_even_if_its_triggers_are_turned_on(
    instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 3)
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION,
        SQL_SYNC.replace(
            "model: {sql: \"select id, email, plan from customers where plan = 'pro'\"}",
            "model: {table: customers}",
        )
        + "schedule: {interval: 1h}\nrun_on_table_change: {column: id}\nenabled: false\n",
    )
    schedule = defs.resolve_schedule_def("retl_pro_hook_schedule")
    skipped = schedule(dg.build_schedule_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and "disabled" in (skipped.skip_message or "")
    sensor = defs.resolve_sensor_def("retl_pro_hook_on_table_change")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    result = sensor(dg.build_sensor_context(instance=instance, cursor="0"))
    assert not result.run_requests and "disabled" in str(result.skip_reason)
    assert instance.get_dynamic_partitions("retl_pro_hook_runs") == []


TABLE_SYNC = """
name: watched
model: {table: customers}
primary_key: id
destination: hook
mappings: [{from: email, to: email}]
run_on_table_change: {column: ltv, every_s: 30}
"""


def test_a_table_change_sensor_fires_only_when_the_table_changed(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path | str
) -> None:
    make_customers(warehouse_path, 5)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, TABLE_SYNC)
    sensor = defs.resolve_sensor_def("retl_watched_on_table_change")
    assert sensor.minimum_interval_seconds == 30

    def tick(cursor: str | None) -> dg.SensorResult:
        return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))

    first = tick(None)  # the first answer is the baseline: nothing known to have changed
    assert first.run_requests is None or first.run_requests == []
    assert first.cursor == "52.50"
    assert tick(first.cursor).run_requests in (None, [])  # unchanged: nothing
    sql(warehouse_path, "update customers set ltv = 99.99 where id = 5")
    changed = tick(first.cursor)
    [request] = changed.run_requests
    [add] = changed.dynamic_partitions_requests
    assert add.partition_keys == [request.partition_key] and changed.cursor == "99.99"
    assert request.tags["retl/trigger"] == "table_change"
    assert tick(changed.cursor).run_requests in (None, [])  # and once only
    # The requested partition runs the sync.
    instance.add_dynamic_partitions("retl_watched_runs", [request.partition_key])
    out = run_sync(defs, "watched", instance, run_id=request.partition_key)
    assert out.status == "succeeded" and len(receiver.delivered()) == 5


def _sequence(name: str, after: str = "", model: str = "customers", alerts: str = "") -> str:
    return f"""
name: {name}
model: {{sql: "select id, email from {model}"}}
primary_key: id
destination: hook
mappings: [{{from: email, to: email}}]
{after}
{alerts}
"""


def test_a_sequence_runs_each_sync_once_after_all_it_follows(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 4)
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION,
        _sequence("first"),
        _sequence("second", "after: [first]"),
        _sequence("joined", "after: [first, second]"),
    )
    first = run_sync(defs, "first", instance)
    assert first.status == "succeeded"
    sequence = first.summary["run_id"]
    # `joined` waits for `second`, which has not run in this sequence yet.
    waiting = evaluate_run_status_sensor(defs, instance, first, "retl_joined_after")
    assert isinstance(waiting, dg.SkipReason) and "waiting for second" in str(waiting.skip_message)
    request = evaluate_run_status_sensor(defs, instance, first, "retl_second_after")
    assert isinstance(request, dg.RunRequest) and request.tags[SEQUENCE_TAG] == sequence
    assert request.partition_key in instance.get_dynamic_partitions("retl_second_runs")
    second = run_sync(defs, "second", instance, tags=request.tags, run_id=request.partition_key)
    assert second.status == "succeeded"
    go = evaluate_run_status_sensor(defs, instance, second, "retl_joined_after")
    assert isinstance(go, dg.RunRequest) and go.tags[SEQUENCE_TAG] == sequence
    # Seen again from the other predecessor's end: the same run, so it runs once.
    again = evaluate_run_status_sensor(defs, instance, first, "retl_joined_after")
    assert isinstance(again, dg.RunRequest) and again.run_key == go.run_key
    assert again.partition_key == go.partition_key
    joined = run_sync(defs, "joined", instance, tags=go.tags, run_id=go.partition_key)
    assert joined.status == "succeeded"
    assert {r["sync"] for r in (q.body for q in receiver.requests)} == {"first", "second", "joined"}


def test_a_failed_step_stops_the_sequence_and_alerts(
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_customers(warehouse_path, 4)
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        defs = defs_from_yaml(
            WEBHOOK_DESTINATION,
            _sequence("first"),
            _sequence("broken", "after: [first]", model="no_such_table"),
            _sequence("last", "after: [broken]", alerts="alerts: {on: [failed], slack: ops}"),
            alerts='channels: {slack: {ops: {webhook_url: "{{ env.SLACK_WEBHOOK_URL }}"}}}',
        )
        first = run_sync(defs, "first", instance)
        request = evaluate_run_status_sensor(defs, instance, first, "retl_broken_after")
        assert isinstance(request, dg.RunRequest)
        broken = run_sync(defs, "broken", instance, tags=request.tags, run_id=request.partition_key)
        assert broken.status == "failed"
        # `last` only starts on success, and nothing succeeded: the sequence stops here...
        assert (
            evaluate_run_status_sensor(defs, instance, broken, "retl_last_after_failed_alert")
            is None
        )
        assert instance.get_runs(dg.RunsFilter(job_name="sync_last")) == []
        # ...and says so where `last` sends its alerts.
        [message] = slack.messages
        assert "sequence stopped: sync last did not run" in message["text"]
        assert f"sequence {first.summary['run_id']} stopped: sync broken failed" in str(message)


@pytest.mark.parametrize(
    ("syncs", "message"),
    [
        ((_sequence("a", "after: [nope]"),), "field 'after[1]': no sync named 'nope'"),
        (
            (_sequence("a", "after: [b]"), _sequence("b", "after: [a]")),
            "the sequence loops: a -> b -> a",
        ),
        (
            (_sequence("a"), _sequence("b"), _sequence("c", "after: [a, b]")),
            "it follows syncs of different sequences, started by a, b",
        ),
    ],
)
def test_a_wrong_sequence_is_refused_naming_it(syncs: tuple[str, ...], message: str) -> None:
    with pytest.raises(Exception) as exc:
        defs_from_yaml(WEBHOOK_DESTINATION, *syncs)
    assert message in str(exc.value)
