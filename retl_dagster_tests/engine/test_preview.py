"""`plan` sends nothing and changes nothing; `test_row` sends one row and changes no state."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from retl_dagster.destinations import build_destination
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.model_sql import model_select
from retl_dagster.engine.preview import plan, send_one_row
from retl_dagster.engine.warehouse import Warehouse
from retl_dagster.runner import run_sync
from retl_dagster_tests.conftest import WEBHOOK_SECRET
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import ALL_WAREHOUSES, WEBHOOK_DESTINATION, defs_from_yaml
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers, sql, state_rows

WAREHOUSES = ALL_WAREHOUSES

CONFIG = SyncConfig.model_validate(
    {
        "name": "customers_hook",
        "model": {"table": "customers"},
        "primary_key": "id",
        "destination": "hook",
        "mode": "upsert",
        "delete_behavior": "delete",
        "mappings": [
            {"from": "email", "to": "email"},
            {"from": "plan", "to": "plan"},
            {"from": "ltv", "to": "lifetime_value"},
        ],
    }
)


def state(path: Path) -> list[tuple]:
    return sql(path, "select _retl_key, _retl_hash from _retl.customers_hook__state order by 1")


def test_plan_counts_the_next_run_and_sends_nothing(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 20)
    run_sync(defs_from_yaml(WEBHOOK_DESTINATION, SYNC), "customers_hook", instance)
    sql(warehouse_path, "update customers set plan = 'x' where id in (1, 2)")
    sql(warehouse_path, "delete from customers where id = 3")
    before, requests = state(warehouse_path), len(receiver.requests)
    with Warehouse() as wh:
        p = plan(wh, CONFIG, model_select(CONFIG), samples=1)
    assert (p.rows_queried, p.counts) == (19, {"added": 0, "changed": 2, "removed": 1})
    assert p.samples["changed"] == [
        {
            "op": "changed",
            "id": "1",
            "fields": {"email": "user1@example.com", "plan": "x", "lifetime_value": 10.5},
        }
    ]
    assert p.samples["removed"] == [{"op": "removed", "id": "3", "fields": {}}]
    assert state(warehouse_path) == before and len(receiver.requests) == requests
    assert sql(
        warehouse_path,
        "select count(*) from _retl.customers_hook__diff where _retl_run_id like 'plan-%'",
    ) == [(0,)]
    # The real next run finds exactly what the plan said.
    nxt = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, SYNC), "customers_hook", instance)
    assert (nxt.summary["changed"], nxt.summary["removed"]) == (2, 1)


def test_test_row_sends_one_row_and_leaves_state_alone(
    receiver: WebhookReceiver, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 5)
    receiver.reject = lambda r: (
        "no pro plans here" if r.get("fields", {}).get("plan") == "pro" else None
    )
    dest = build_destination("hook", "webhook", {"url": receiver.url, "secret": WEBHOOK_SECRET})
    dest.client.exchanges = []  # type: ignore[attr-defined]
    with Warehouse() as wh:
        record, answer = send_one_row(wh, CONFIG, model_select(CONFIG), dest, "2", "changed")
        _, rejected = send_one_row(wh, CONFIG, model_select(CONFIG), dest, "3")
    assert (record.op, record.key, record.fields["email"]) == ("changed", "2", "user2@example.com")
    assert answer.rejected == {} and rejected.rejected == {"3": "no pro plans here"}
    assert [r["id"] for r in receiver.delivered()] == ["2", "3"]
    assert len(dest.client.exchanges) == 2  # type: ignore[attr-defined]
    assert state_rows(warehouse_path) == 0


def test_redaction_hides_env_secrets(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TEST_HOOK_URL", "http://x")
    monkeypatch.setenv("TEST_HOOK_SECRET", WEBHOOK_SECRET)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    resource = defs.resources["destination__hook"]  # type: ignore[index]
    assert resource.redact(f"token={WEBHOOK_SECRET}&x=1") == "token=***&x=1"


def test_plan_and_test_row_jobs_run_in_dagster(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 4)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    planned = defs.resolve_job_def("plan_customers_hook").execute_in_process(
        instance=instance,
        run_config={"ops": {"plan_customers_hook_op": {"config": {"samples": 1}}}},
    )
    assert planned.success
    [mat] = [e for e in planned.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert mat.event_specific_data.metadata["added"].value == 4  # type: ignore[union-attr]
    assert receiver.requests == []

    sent = defs.resolve_job_def("test_row_customers_hook").execute_in_process(
        instance=instance,
        run_config={"ops": {"test_row_customers_hook_op": {"config": {"row_id": "2"}}}},
    )
    assert sent.success
    [out] = [e for e in sent.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = out.event_specific_data.metadata  # type: ignore[union-attr]
    assert md["result"].value == "delivered"
    assert "> POST " + receiver.url in md["exchange"].value
    assert WEBHOOK_SECRET not in md["exchange"].value
    assert [r["id"] for r in receiver.delivered()] == ["2"]
