"""Guardrails: the `rejected_records` check on the load, the removal guard and its override,
alerts once per change of grade, a sequence stopping over the maximum, and declaration errors.
Real Dagster runs on a real instance, the webhook receiver on loopback, the Slack fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pydantic
import pytest
import yaml

from retl_dagster.components.alerts import GUARDRAIL_CHANGE_TAG, GUARDRAIL_TAG
from retl_dagster.components.sync import load_key
from retl_dagster.engine.config import SyncConfig, explain
from retl_dagster.engine.guardrails import ALLOW_REMOVALS_TAG
from retl_dagster.runner import SyncOutcome, run_sync
from retl_dagster_tests.fakes.slack import FakeSlack
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    ALL_WAREHOUSES,
    WEBHOOK_DESTINATION,
    defs_from_yaml,
    evaluate_run_status_sensor,
    sql,
)
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers, state_rows

GUARDED = SYNC + (
    "guardrails: {warn_rejected_percent: 10, max_rejected_percent: 30, max_removed_percent: 20}\n"
)
ALERTS = 'channels: {slack: {ops: {webhook_url: "{{ env.SLACK_WEBHOOK_URL }}"}}}'


def reject_ids_up_to(receiver: WebhookReceiver, n: int) -> None:
    receiver.reject = lambda r: "plan not allowed" if int(r["id"]) <= n else None


def check_of(outcome: SyncOutcome) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e
        for e in outcome.result.get_asset_check_evaluations()
        if e.check_name == "rejected_records"
    ]
    assert evaluation.asset_key == load_key("customers_hook")
    return evaluation


@pytest.mark.parametrize(
    ("rejected", "passed", "severity"),
    [
        (5, True, None),  # 5%: under the warning threshold
        (10, True, None),  # 10%: at it, still passes
        (20, False, dg.AssetCheckSeverity.WARN),  # between warn (10) and max (30)
        (40, False, dg.AssetCheckSeverity.ERROR),  # above max
    ],
)
def test_the_rejected_share_is_graded_by_the_load_check(
    rejected: int,
    passed: bool,
    severity: dg.AssetCheckSeverity | None,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 100)
    reject_ids_up_to(receiver, rejected)
    outcome = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, GUARDED), "customers_hook", instance)
    assert outcome.status == "partial" and outcome.result.success
    evaluation = check_of(outcome)
    assert evaluation.passed is passed
    if severity is not None:
        assert evaluation.severity == severity
    md = {k: v.value for k, v in evaluation.metadata.items()}
    assert (md["rejected"], md["sent"], md["rejected_percent"]) == (rejected, 100, rejected)
    assert (md["warn_rejected_percent"], md["max_rejected_percent"]) == (10, 30)
    # Whatever the grade, the load is recorded and what was acknowledged stays synced.
    [mat] = outcome.result.asset_materializations_for_node("retl__customers_hook__load")
    assert mat.metadata["succeeded"].value == 100 - rejected
    assert state_rows(warehouse_path) == 100 - rejected
    level = {True: "healthy", False: "warn" if severity == dg.AssetCheckSeverity.WARN else "error"}
    assert instance.get_run_by_id(outcome.result.run_id).tags[GUARDRAIL_TAG] == level[passed]


def test_without_a_rejected_threshold_there_is_no_check(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 10)
    reject_ids_up_to(receiver, 9)
    removal_only = SYNC + "guardrails: {max_removed_percent: 20}\n"
    for declared in (SYNC, removal_only):
        defs = defs_from_yaml(WEBHOOK_DESTINATION, declared)
        assert defs.resolve_asset_graph().asset_check_keys == {
            dg.AssetCheckKey(
                dg.AssetKey(["retl", "customers_hook", "diff"]), "primary_key_unique_not_null"
            )
        }
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "partial"
    assert [e.check_name for e in outcome.result.get_asset_check_evaluations()] == [
        "primary_key_unique_not_null"
    ]


@pytest.mark.parametrize("warehouse_path", ALL_WAREHOUSES, indirect=True)
def test_too_many_removals_stop_the_run_until_allowed(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    defs = defs_from_yaml(WEBHOOK_DESTINATION, GUARDED)
    make_customers(warehouse_path, 100)
    first = run_sync(defs, "customers_hook", instance)  # nothing synced yet: never trips
    assert first.status == "succeeded" and state_rows(warehouse_path) == 100
    sql(warehouse_path, "delete from customers where id > 90")  # 10%: within 20
    within = run_sync(defs, "customers_hook", instance)
    assert within.status == "succeeded" and within.summary["removed"] == 10
    assert state_rows(warehouse_path) == 90

    sql(warehouse_path, "delete from customers where id > 63")  # 27 of 90: 30%
    sent_before, delivered_before = len(receiver.requests), len(receiver.delivered())
    stopped = run_sync(defs, "customers_hook", instance)
    assert stopped.status == "failed" and stopped.exit_code == 1
    error = stopped.summary["error"]
    assert "27 of the 90 synced records (30.00%)" in error
    assert "max_removed_percent 20" in error
    assert "retl sync customers_hook --allow-removals" in error
    assert f"{ALLOW_REMOVALS_TAG}=true" in error
    assert len(receiver.requests) == sent_before  # nothing sent
    assert state_rows(warehouse_path) == 90  # state unchanged
    run_id = stopped.summary["run_id"]
    [(status, removed, row_error)] = sql(
        warehouse_path,
        "select status, removed, error from _retl.sync_runs "
        f"where sync = 'customers_hook' and run_id = '{run_id}'",
    )
    assert (status, removed) == ("failed", 27) and "max_removed_percent" in row_error
    # Dagster's step failure says the same (the UI, the failed alert).
    assert not stopped.result.success

    # The same partition again, with the override (as the UI does with the run tag).
    allowed = run_sync(
        defs, "customers_hook", instance, run_id=run_id, tags={ALLOW_REMOVALS_TAG: "true"}
    )
    assert allowed.status == "succeeded", allowed.summary
    assert allowed.summary["removed"] == 27 and "error" not in allowed.summary
    removed = [r for r in receiver.delivered()[delivered_before:] if r["op"] == "removed"]
    assert sorted(int(r["id"]) for r in removed) == list(range(64, 91))
    assert state_rows(warehouse_path) == 63


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", fake.webhook_url)
        yield fake
    assert fake.contract_errors == []


def test_alerts_go_once_per_change_of_grade_and_on_recovery(
    receiver: WebhookReceiver,
    slack: FakeSlack,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sync = GUARDED + "alerts: {on: [guardrails], slack: ops}\n"
    make_customers(warehouse_path, 100)
    sensor = "retl_customers_hook_guardrail_alert"
    headlines: list[str] = []
    # rejected ids per run: healthy, warn, warn again, error, healthy
    for i, rejected in enumerate([0, 20, 20, 40, 0]):
        if i:
            sql(warehouse_path, f"update customers set email = 'v{i}-' || email")
        reject_ids_up_to(receiver, rejected)
        # Definitions built anew each run, as after a restart: the grade lives in _retl.
        defs = defs_from_yaml(WEBHOOK_DESTINATION, sync, alerts=ALERTS)
        outcome = run_sync(defs, "customers_hook", instance)
        assert outcome.summary["succeeded"] + outcome.summary["rejected"] == 100
        assert evaluate_run_status_sensor(defs, instance, outcome, sensor) is None
        headlines.append(slack.messages[-1]["text"] if slack.messages else "")
        if i == 2:
            tags = instance.get_run_by_id(outcome.result.run_id).tags
            assert GUARDRAIL_CHANGE_TAG not in tags and tags[GUARDRAIL_TAG] == "warn"
    assert len(slack.messages) == 3
    assert headlines[0] == ""
    assert "above warn_rejected_percent" in headlines[1]
    assert headlines[2] == headlines[1]  # still warn: no new message
    assert "above max_rejected_percent" in headlines[3]
    assert "recovered" in headlines[4]
    warn, error, recovered = (str(m["blocks"]) for m in slack.messages)
    assert "20.00% of the 100 records sent were rejected (20)" in warn and "was healthy" in warn
    assert "plan not allowed" in warn  # the first rejections
    assert "above max_rejected_percent 30" in error and "was warn" in error
    assert "within its guardrails" in recovered and "was error" in recovered
    [(level,)] = sql(warehouse_path, "select level from _retl.guardrail_state")
    assert level == "healthy"


def _step(name: str, after: str = "") -> str:
    return f"""
name: {name}
model: {{sql: "select id, email from customers"}}
primary_key: id
destination: hook
mappings: [{{from: email, to: email}}]
guardrails: {{warn_rejected_percent: 10, max_rejected_percent: 30}}
{after}
"""


@pytest.mark.parametrize(("rejected", "stops"), [(5, True), (2, False)])
def test_a_sequence_stops_after_a_step_over_its_max(
    rejected: int,
    stops: bool,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 10)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, _step("first"), _step("second", "after: [first]"))
    reject_ids_up_to(receiver, rejected)  # 50% is over max 30; 20% only warns
    first = run_sync(defs, "first", instance)
    assert first.status == "partial"
    answer = evaluate_run_status_sensor(defs, instance, first, "retl_second_after")
    if stops:
        assert isinstance(answer, dg.SkipReason)
        assert "stopped: sync first rejected more than its guardrails.max_rejected_percent" in str(
            answer.skip_message
        )
    else:
        assert isinstance(answer, dg.RunRequest)


@pytest.mark.parametrize(
    ("guardrails", "message"),
    [
        (
            "{warn_rejected_percent: 10, max_rejected_percent: 5}",
            "field 'guardrails.warn_rejected_percent': warn_rejected_percent (10) is above "
            "max_rejected_percent (5). Fix: make the warning threshold at most the maximum",
        ),
        (
            "{max_removed_percent: 120}",
            "field 'guardrails.max_removed_percent': max_removed_percent is 120, not a "
            "percentage. Fix: give a number from 0 to 100",
        ),
        (
            '{max_rejected_percent: "5%"}',
            "field 'guardrails.max_rejected_percent': max_rejected_percent is '5%'",
        ),
        (
            "{max_rejected_pct: 5}",
            "field 'guardrails.max_rejected_pct': unknown key 'max_rejected_pct'. Fix: rename "
            "it to `max_rejected_percent`",
        ),
    ],
)
def test_wrong_guardrails_are_refused_naming_the_sync_field_and_fix(
    guardrails: str, message: str
) -> None:
    # As `retl validate` reads a sync (engine/declarations.py) ...
    raw = yaml.safe_load(SYNC + f"guardrails: {guardrails}\n")
    with pytest.raises(pydantic.ValidationError) as info:
        SyncConfig.model_validate(raw)
    [line] = explain(info.value, "customers_hook", "defs/syncs/customers_hook/defs.yaml")
    assert line.startswith("sync 'customers_hook' (defs/syncs/customers_hook/defs.yaml), ")
    assert message in line
    # ... and as Dagster loads it: refused too.
    with pytest.raises(Exception, match="guardrails"):
        defs_from_yaml(WEBHOOK_DESTINATION, SYNC + f"guardrails: {guardrails}\n")


def test_retl_sync_allow_removals_tags_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from retl_dagster import cli, runner

    seen: list[dict[str, str]] = []

    def fake_run_sync(*args: object, tags: dict[str, str], **kwargs: object) -> None:
        seen.append(tags)
        raise runner.SyncDisabled("stop here")

    monkeypatch.setattr(cli, "_load_defs", lambda: None)
    monkeypatch.setattr(runner, "run_sync", fake_run_sync)
    for args in (
        ["sync", "demo_users_to_file"],
        ["sync", "demo_users_to_file", "--allow-removals"],
    ):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 1 and "stop here" in result.output
    assert [t.get(ALLOW_REMOVALS_TAG) for t in seen] == [None, "true"]
