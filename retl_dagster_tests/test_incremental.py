"""Incremental diffs (`incremental: {cursor, full_every}`): a run reads only the rows past the
last run's cursor, and a periodic full diff catches deletes and rows whose cursor did not move.
On each warehouse: the cursor's value goes through text and back into the column's type."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from retl_dagster.engine import stages
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.warehouse import Warehouse
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import ALL_WAREHOUSES, WEBHOOK_DESTINATION, defs_from_yaml, sql

WAREHOUSES = ALL_WAREHOUSES

SYNC = """
name: inc_hook
model: {table: customers}
primary_key: id
destination: hook
mode: upsert
mappings:
  - {from: email, to: email}
  - {from: plan, to: plan}
delete_behavior: delete
incremental: {cursor: updated_at, full_every: 1h}
"""


def make_customers(target: Path | str) -> None:
    sql(
        target,
        """drop table if exists customers; create table customers as
        select i as id, 'user' || i || '@example.com' as email, 'free' as plan,
               cast('2026-01-01 00:00:00' as timestamp) + i * interval '1 minute' as updated_at
        from generate_series(1, 20) as t(i)""",
    )


def runs(target: Path | str) -> list[tuple[str, int, str | None]]:
    return [
        (str(kind), int(queried), cursor)
        for kind, queried, cursor in sql(
            target,
            "select diff_kind, rows_queried, cursor_to from _retl.sync_runs "
            "where sync = 'inc_hook' order by started_at",
        )
    ]


def sent(receiver: WebhookReceiver, since: int) -> dict[str, str]:
    """Record id -> op of the records delivered after the first `since` requests."""
    out: dict[str, str] = {}
    for request in receiver.requests[since:]:
        for record in request.body["records"]:
            out[str(record["id"])] = record["op"]
    return out


@pytest.fixture
def defs(receiver: WebhookReceiver, warehouse_path: Path | str) -> dg.Definitions:
    make_customers(warehouse_path)
    return defs_from_yaml(WEBHOOK_DESTINATION, SYNC)


def test_runs_read_only_rows_past_the_cursor_and_a_full_diff_catches_the_rest(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path | str,
) -> None:
    first = run_sync(defs, "inc_hook", instance)
    assert first.status == "succeeded", first.summary
    assert first.summary["added"] == 20
    [(kind, queried, cursor)] = runs(warehouse_path)
    assert (kind, queried) == ("full", 20)
    assert cursor is not None and cursor.startswith("2026-01-01 00:20")

    # Two rows changed with their cursor moved, one changed behind its back (cursor kept),
    # one deleted, one added.
    sql(
        warehouse_path,
        """update customers set plan = 'pro', updated_at = cast('2026-02-01' as timestamp)
           where id in (3, 4);
        update customers set plan = 'sneaky' where id = 5;
        delete from customers where id = 6;
        insert into customers values
            (21, 'user21@example.com', 'free', cast('2026-02-01' as timestamp))""",
    )
    n = len(receiver.requests)
    receiver.reject = lambda record: "plan locked" if record["id"] == "4" else None
    second = run_sync(defs, "inc_hook", instance)
    assert second.status == "partial", second.summary
    # Only rows at or past the last cursor were read: the three moved ones and the last row
    # of the first run (equal to its cursor; unchanged, so not sent).
    assert runs(warehouse_path)[-1][:2] == ("incremental", 4)
    assert sent(receiver, n) == {"3": "changed", "4": "changed", "21": "added"}

    # A row moves past the cursor while the rejected one is still refused: both are sent.
    sql(
        warehouse_path,
        "update customers set plan = 'gold', updated_at = cast('2026-03-01' as timestamp) "
        "where id = 7",
    )
    n = len(receiver.requests)
    assert run_sync(defs, "inc_hook", instance).status == "partial"
    assert runs(warehouse_path)[-1][:2] == ("incremental", 4)
    assert sent(receiver, n) == {"4": "changed", "7": "changed"}

    # The rejected row's cursor is now behind the last run's: it is still read (as a rejected
    # record) and resent, while nothing else behind the cursor is read.
    receiver.reject = lambda record: None
    n = len(receiver.requests)
    assert run_sync(defs, "inc_hook", instance).status == "succeeded"
    assert runs(warehouse_path)[-1][:2] == ("incremental", 2)
    assert sent(receiver, n) == {"4": "changed"}

    # Nothing new at all: only the row at the cursor is read, and nothing is sent.
    n = len(receiver.requests)
    assert run_sync(defs, "inc_hook", instance).status == "succeeded"
    assert runs(warehouse_path)[-1][:2] == ("incremental", 1)
    assert sent(receiver, n) == {}

    # The last full diff is now older than full_every: the next run diffs in full and sends
    # what the incremental runs could not see.
    sql(
        warehouse_path,
        "update _retl.sync_runs set started_at = started_at - interval '2 hours' "
        "where sync = 'inc_hook'",
    )
    n = len(receiver.requests)
    fourth = run_sync(defs, "inc_hook", instance)
    assert fourth.status == "succeeded"
    assert runs(warehouse_path)[-1][:2] == ("full", 20)
    assert sent(receiver, n) == {"5": "changed", "6": "removed"}


@pytest.mark.warehouses("duckdb")
def test_a_changed_mapping_or_a_reset_diffs_in_full(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    assert run_sync(defs, "inc_hook", instance).status == "succeeded"
    assert run_sync(defs, "inc_hook", instance).status == "succeeded"
    assert [k for k, _, _ in runs(warehouse_path)] == ["full", "incremental"]

    # A new mapping changes every row's hash: all 20 must be resent, not only recent ones.
    remapped = defs_from_yaml(WEBHOOK_DESTINATION, SYNC.replace("  - {from: plan, to: plan}\n", ""))
    n = len(receiver.requests)
    assert run_sync(remapped, "inc_hook", instance).status == "succeeded"
    assert runs(warehouse_path)[-1][:2] == ("full", 20)
    assert len(sent(receiver, n)) == 20

    # After a reset the state is empty: a full diff sends every row again.
    sql(warehouse_path, "delete from _retl.inc_hook__state")
    n = len(receiver.requests)
    assert run_sync(remapped, "inc_hook", instance).status == "succeeded"
    assert runs(warehouse_path)[-1][0] == "full"
    assert set(sent(receiver, n).values()) == {"added"} and len(sent(receiver, n)) == 20


@pytest.mark.warehouses("duckdb")
def test_a_cursor_that_is_not_a_model_column_is_refused_naming_the_field(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC.replace("cursor: updated_at", "cursor: nope"))
    outcome = run_sync(defs, "inc_hook", instance)
    assert outcome.status == "failed"
    assert "incremental.cursor" in str(outcome.summary["error"])
    assert "column 'nope' is not in the model" in str(outcome.summary["error"])
    with pytest.raises(Exception, match="full_every"):
        defs_from_yaml(WEBHOOK_DESTINATION, SYNC.replace("full_every: 1h", "full_every: daily"))


@pytest.mark.warehouses("duckdb")
def test_a_plan_diffs_as_the_next_run_will(
    defs: dg.Definitions,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    config = SyncConfig.model_validate(yaml.safe_load(SYNC))
    with Warehouse(str(warehouse_path)) as wh:
        first = stages.plan(wh, config)
    assert first.diff.kind == "full" and first.counts["added"] == 20
    assert "(full diff: first run)" in stages.describe_plan(config, first)[0]
    assert run_sync(defs, "inc_hook", instance).status == "succeeded"
    sql(
        warehouse_path,
        """delete from customers where id = 6;
        update customers set plan = 'pro', updated_at = cast('2026-02-01' as timestamp)
        where id = 3""",
    )
    with Warehouse(str(warehouse_path)) as wh:
        planned = stages.plan(wh, config)
    # As the run will: row 3 changed; row 6's removal waits for the next full diff.
    assert planned.diff.kind == "incremental"
    assert planned.counts == {"added": 0, "changed": 1, "removed": 0}
    assert (
        "(incremental diff: updated_at >= 2026-01-01 00:20:00)"
        in (stages.describe_plan(config, planned)[0])
    )
