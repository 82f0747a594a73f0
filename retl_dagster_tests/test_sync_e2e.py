"""End to end: a real warehouse (a DuckDB file and a PostgreSQL database), real Dagster runs on
a real instance, real HTTP on loopback."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.sync import diff_key, load_key
from retl_dagster.runner import run_sync
from retl_dagster_tests.conftest import WEBHOOK_SECRET
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import ALL_WAREHOUSES, WEBHOOK_DESTINATION, defs_from_yaml, sql

WAREHOUSES = ALL_WAREHOUSES

SYNC = """
name: customers_hook
model: {table: customers}
primary_key: id
destination: hook
mode: upsert
mappings:
  - {from: email, to: email}
  - {from: plan, to: plan}
  - {from: ltv, to: lifetime_value}
delete_behavior: delete
"""


def make_customers(path: Path, n: int) -> None:
    sql(
        path,
        f"""drop table if exists customers; create table customers as
        select i as id, 'user' || i || '@example.com' as email,
               case when i % 3 = 0 then 'pro' else 'free' end as plan,
               (i * 10.5)::decimal(12, 2) as ltv, 'note ' || i as internal_note
        from generate_series(1, {n}) as t(i)""",
    )


def state_rows(path: Path | str) -> int:
    """Records in the sync's state; 0 before its first diff made the table."""
    [(exists,)] = sql(
        path,
        "select count(*) from information_schema.tables where lower(table_schema) = '_retl' "
        "and lower(table_name) = 'customers_hook__state'",  # Snowflake's are upper case
    )
    if not exists:
        return 0
    [(n,)] = sql(path, "select count(*) from _retl.customers_hook__state")
    return int(n)


@pytest.fixture
def defs(receiver: WebhookReceiver, warehouse_path: Path) -> dg.Definitions:
    make_customers(warehouse_path, 120)
    return defs_from_yaml(WEBHOOK_DESTINATION, SYNC)


def test_first_run_adds_all_then_next_run_sends_exactly_the_changes(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    first = run_sync(defs, "customers_hook", instance)
    assert first.status == "succeeded", first.summary
    assert first.exit_code == 0
    assert (first.summary["rows_queried"], first.summary["added"]) == (120, 120)
    assert (first.summary["succeeded"], first.summary["rejected"]) == (120, 0)
    records = receiver.delivered()
    assert len(records) == 120 and {r["op"] for r in records} == {"added"}
    assert len(receiver.requests) == 3  # batch_size 50
    assert receiver.signature_failures == 0
    assert records[0]["fields"].keys() == {"email", "plan", "lifetime_value"}
    by_id = {r["id"]: r for r in records}
    assert by_id["7"]["fields"] == {
        "email": "user7@example.com",
        "plan": "free",
        "lifetime_value": 73.5,
    }
    body = receiver.requests[0].body
    assert body["sync"] == "customers_hook" and body["run_id"] == first.summary["run_id"]

    # 5 changed, 3 removed, 4 added, plus an unmapped change everywhere.
    sql(warehouse_path, "update customers set internal_note = 'edited'")
    sql(warehouse_path, "update customers set plan = 'enterprise' where id between 1 and 5")
    sql(warehouse_path, "delete from customers where id in (10, 11, 12)")
    sql(
        warehouse_path,
        "insert into customers select i, 'new' || i || '@example.com', 'free', "
        "0, '' from generate_series(200, 203) as t(i)",
    )
    receiver.requests.clear()
    second = run_sync(defs, "customers_hook", instance)
    s = second.summary
    assert (s["rows_queried"], s["added"], s["changed"], s["removed"]) == (121, 4, 5, 3)
    assert (s["succeeded"], s["rejected"]) == (12, 0)
    sent = receiver.delivered()
    assert sorted((r["op"], r["id"]) for r in sent) == sorted(
        [("changed", str(i)) for i in range(1, 6)]
        + [("removed", str(i)) for i in (10, 11, 12)]
        + [("added", str(i)) for i in range(200, 204)]
    )
    assert all("fields" not in r for r in sent if r["op"] == "removed")

    # Metadata a user reads in the UI.
    mat = instance.get_latest_materialization_event(load_key("customers_hook"))
    assert mat and mat.asset_materialization
    md = mat.asset_materialization.metadata
    assert md["succeeded"].value == 12 and md["rejected"].value == 0
    diff_mat = instance.get_latest_materialization_event(diff_key("customers_hook"))
    assert diff_mat and diff_mat.asset_materialization
    assert diff_mat.asset_materialization.metadata["changed"].value == 5
    assert diff_mat.asset_materialization.partition == s["run_id"]

    # The warehouse log holds exactly the records of each run.
    logged = sql(
        warehouse_path,
        "select run_id, op, status, count(*) from "
        "_retl.sync_record_results group by 1, 2, 3 order by 1, 2, 3",
    )
    assert logged == sorted(
        [
            (first.summary["run_id"], "added", "succeeded", 120),
            (s["run_id"], "added", "succeeded", 4),
            (s["run_id"], "changed", "succeeded", 5),
            (s["run_id"], "removed", "succeeded", 3),
        ]
    )

    receiver.requests.clear()
    third = run_sync(defs, "customers_hook", instance)
    assert (third.summary["added"], third.summary["changed"], third.summary["removed"]) == (0, 0, 0)
    assert receiver.requests == []


def test_unmapped_column_change_sends_nothing(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    assert run_sync(defs, "customers_hook", instance).status == "succeeded"
    sql(warehouse_path, "update customers set internal_note = 'changed everywhere'")
    receiver.requests.clear()
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "succeeded"
    assert (outcome.summary["changed"], outcome.summary["succeeded"]) == (0, 0)
    assert receiver.requests == []


def test_rejected_record_is_reported_kept_pending_and_retried_with_latest_values(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(warehouse_path, "update customers set email = 'not-an-email' where id = 42")
    receiver.reject = lambda r: (
        "invalid email" if "@" not in r["fields"].get("email", "@") else None
    )
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "partial" and outcome.exit_code == 2
    assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (119, 1)
    md = instance.get_latest_materialization_event(
        load_key("customers_hook")
    ).asset_materialization.metadata  # type: ignore[union-attr]
    assert (
        "invalid email" in md["rejected_samples"].value
        and "not-an-email" in md["rejected_samples"].value
    )
    run_id = outcome.summary["run_id"]
    assert sql(
        warehouse_path,
        "select _retl_key, status, error from _retl.sync_record_results "
        f"where run_id = '{run_id}' and status <> 'succeeded'",
    ) == [("42", "rejected", "invalid email")]
    assert sql(
        warehouse_path, "select count(*) from _retl.customers_hook__state where _retl_key = '42'"
    ) == [(0,)]
    assert sql(warehouse_path, "select attempts from _retl.customers_hook__pending") == [(1,)]

    # Next run: only the rejected record goes again, still rejected, attempts counted.
    receiver.requests.clear()
    again = run_sync(defs, "customers_hook", instance)
    assert [(r["op"], r["id"]) for r in receiver.delivered()] == [("added", "42")]
    assert again.status == "partial"
    assert sql(warehouse_path, "select attempts from _retl.customers_hook__pending") == [(2,)]

    # Fixed in the model: it is sent with the latest value, succeeds, and leaves pending.
    sql(warehouse_path, "update customers set email = 'fixed42@example.com' where id = 42")
    receiver.requests.clear()
    fixed = run_sync(defs, "customers_hook", instance)
    assert fixed.status == "succeeded"
    assert [r["fields"]["email"] for r in receiver.delivered()] == ["fixed42@example.com"]
    assert sql(warehouse_path, "select count(*) from _retl.customers_hook__pending") == [(0,)]


def test_duplicate_primary_keys_stop_the_run_before_anything_is_sent(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(
        warehouse_path,
        "insert into customers values (7, 'dup@example.com', 'free', 1, ''), "
        "(7, 'dup2@example.com', 'free', 1, ''), (9, 'd@example.com', 'pro', 1, '')",
    )
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert receiver.requests == []
    error = outcome.summary["error"]
    assert "'7' x3" in error and "'9' x2" in error and "primary_key" in error
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(diff_key("customers_hook"), "primary_key_unique_not_null")]
    )
    check = next(iter(evaluation.values()))
    assert check.status.value == "FAILED"
    assert instance.get_latest_materialization_event(load_key("customers_hook")) is None
    assert state_rows(warehouse_path) == 0


def test_null_primary_key_is_named(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(warehouse_path, "insert into customers values (null, 'x@example.com', 'free', 1, '')")
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "failed"
    assert "1 row(s) have a null id" in outcome.summary["error"]
    assert receiver.requests == []


def test_transient_errors_are_retried_with_the_same_batch_id(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
) -> None:
    receiver.transient = [(429, {"Retry-After": "0"}), (503, {})]
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "succeeded"
    statuses: dict[str, list[int]] = {}
    for r in receiver.requests:  # batches go out concurrently: follow each by its id
        statuses.setdefault(r.body["batch_id"], []).append(r.status)
    assert sorted(s for seq in statuses.values() for s in seq if s != 200) == [429, 503]
    # Each batch ends acknowledged under its one id: a retry is the same batch, not a new one.
    assert len(statuses) == 3 and all(seq[-1] == 200 for seq in statuses.values())
    assert len(receiver.delivered()) == 120


def test_retries_exhausted_fail_the_run_and_mark_nothing_synced(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    receiver.transient = [(500, {})] * 18  # each of the 3 batches (in flight at once) 6 times
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "failed"
    assert "failed 6 times" in outcome.summary["error"]
    assert state_rows(warehouse_path) == 0
    # The next run sends everything: nothing was lost.
    receiver.requests.clear()
    assert run_sync(defs, "customers_hook", instance).summary["succeeded"] == 120


def test_a_4xx_rejects_the_batch_with_the_body_as_reason(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    receiver.batch_status = 422
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "partial"
    assert outcome.summary["rejected"] == 120
    errors = sql(warehouse_path, "select distinct error from _retl.sync_record_results")
    assert errors == [('HTTP 422: {"error": "invalid batch"}',)]


def test_mapping_to_a_missing_column_fails_the_run_naming_the_field(
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 3)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC.replace("{from: plan,", "{from: tier,"))
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "failed"
    assert "field 'mappings[2].from'" in outcome.summary["error"]
    assert "column 'tier' is not in the model" in outcome.summary["error"]
    assert receiver.requests == []


def test_secrets_never_reach_the_event_log(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
) -> None:
    receiver.transient = [(503, {})]
    run_sync(defs, "customers_hook", instance)
    logged = [str(e) for e in instance.all_logs(instance.get_runs()[0].run_id)]
    assert logged and not any(WEBHOOK_SECRET in line for line in logged)
    resource = defs.resources["destination__hook"]  # type: ignore[index]
    assert WEBHOOK_SECRET not in repr(resource)


def test_delete_behavior_nothing_sends_no_removals_and_forgets_them(
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 10)
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION, SYNC.replace("delete_behavior: delete", "delete_behavior: nothing")
    )
    assert run_sync(defs, "customers_hook", instance).summary["added"] == 10
    sql(warehouse_path, "delete from customers where id <= 4")
    receiver.requests.clear()
    second = run_sync(defs, "customers_hook", instance)
    assert second.status == "succeeded"
    assert (second.summary["removed"], second.summary["succeeded"]) == (4, 0)
    assert receiver.requests == []
    assert sql(warehouse_path, "select count(*) from _retl.customers_hook__state") == [(6,)]
    assert sql(
        warehouse_path,
        "select status, count(*) from _retl.sync_record_results "
        f"where run_id = '{second.summary['run_id']}' group by 1",
    ) == [("skipped", 4)]
    third = run_sync(defs, "customers_hook", instance)
    assert third.summary["removed"] == 0


def test_an_expired_rejection_stops_retrying_and_says_so(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(warehouse_path, "update customers set email = 'broken' where id = 5")
    receiver.reject = lambda r: (
        "invalid email" if "@" not in r["fields"].get("email", "@") else None
    )
    assert run_sync(defs, "customers_hook", instance).status == "partial"
    # Fifteen days of failing later (the default window is 14 days):
    sql(
        warehouse_path,
        "update _retl.customers_hook__pending set first_failed_at = now() - interval '15 days'",
    )
    receiver.requests.clear()
    expired = run_sync(defs, "customers_hook", instance)
    assert receiver.requests == [] and expired.status == "succeeded"
    [(status, error)] = sql(
        warehouse_path,
        "select status, error from _retl.sync_record_results "
        f"where run_id = '{expired.summary['run_id']}'",
    )
    assert status == "expired"
    assert "no more retries until the row changes. Last error: invalid email" in error
    assert run_sync(defs, "customers_hook", instance).summary["added"] == 0  # says it once
    # The row changes: it is offered again, with a fresh window.
    sql(warehouse_path, "update customers set email = 'fixed@example.com' where id = 5")
    fixed = run_sync(defs, "customers_hook", instance)
    assert fixed.status == "succeeded" and fixed.summary["succeeded"] == 1
