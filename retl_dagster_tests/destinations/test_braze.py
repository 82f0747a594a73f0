"""Braze: attributes, events, purchases and deletes through Dagster against a fake Braze."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.braze import FakeBraze
from retl_dagster_tests.harness import defs_from_yaml, sql


@pytest.fixture
def braze(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBraze]:
    monkeypatch.setenv("BRAZE_KEY", "rest-key")
    fake = FakeBraze("rest-key")
    with fake:
        monkeypatch.setenv("BRAZE_URL", fake.url)
        yield fake


DEST = """
destinations:
  braze:
    type: braze
    api_key: "{{ env.BRAZE_KEY }}"
    base_url: "{{ env.BRAZE_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 2
"""


def sync(mode: str, object_: str, delete: str = "nothing", extra: str = "") -> str:
    return f"""
name: to_braze
model: {{table: users}}
primary_key: id
destination: braze
object: {object_}
mode: {mode}
match: {{column: ext, field: external_id}}
mappings:
  - {{from: email, to: email}}
  - {{from: plan, to: plan}}
{extra}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'ext-' || i as ext,
        'u' || i || '@example.com' as email, 'pro' as plan, 'SKU-' || (i % 3) as sku,
        'USD' as cur, (i * 1.5)::decimal(10, 2) as price from range(1, {n + 1}) t(i)""",
    )


def test_attributes_in_batches_of_75_then_deletes(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 160)
    defs = defs_from_yaml(DEST, sync("mirror", "users", "delete"))
    assert run_sync(defs, "to_braze", instance).status == "succeeded"
    assert len(braze.users) == 160 and braze.count("/users/track") == 3  # 75 + 75 + 10
    assert braze.users["ext-9"] == {
        "external_id": "ext-9",
        "email": "u9@example.com",
        "plan": "pro",
    }
    sql(warehouse_path, "update users set plan = null where id = 9")
    sql(warehouse_path, "delete from users where id > 150")
    out = run_sync(defs, "to_braze", instance)
    assert (out.summary["changed"], out.summary["removed"]) == (1, 10)
    assert "plan" not in braze.users["ext-9"] and len(braze.users) == 150


def test_a_refused_object_is_reported_with_brazes_error(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    sql(warehouse_path, "update users set email = 'nope' where id = 4")
    out = run_sync(defs_from_yaml(DEST, sync("upsert", "users")), "to_braze", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (29, 1)
    assert sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    ) == [("4", "Invalid email 'nope'")]


def test_update_never_creates(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 5)
    braze.users["ext-1"] = {"external_id": "ext-1"}
    run_sync(defs_from_yaml(DEST, sync("update", "users")), "to_braze", instance)
    assert list(braze.users) == ["ext-1"] and braze.users["ext-1"]["plan"] == "pro"


def test_events_and_purchases_survive_rate_limits(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    braze.rate_limit, braze.window_s = 3, 1.0
    users(warehouse_path, 200)
    events = defs_from_yaml(
        DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 20"),
        sync("events", "Plan Reviewed"),
    )
    assert run_sync(events, "to_braze", instance).status == "succeeded"
    assert braze.count("/users/track", 429) > 0
    assert len(braze.events) == 200 and braze.events[0]["name"] == "Plan Reviewed"
    purchases = sync(
        "events",
        "purchases",
        extra="  - {from: sku, to: product_id}\n"
        "  - {from: cur, to: currency}\n  - {from: price, to: price}",
    )
    out = run_sync(defs_from_yaml(DEST, purchases.replace("to_braze", "buys")), "buys", instance)
    assert out.status == "succeeded" and len(braze.purchases) == 200
    assert braze.purchases[0]["price"] == 1.5 and braze.purchases[0]["properties"]["plan"] == "pro"


def test_purchases_need_their_fields() -> None:
    with pytest.raises(Exception, match="purchases need product_id, currency, price"):
        defs_from_yaml(DEST, sync("events", "purchases"))


def test_subscription_group_states(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 6)
    sql(warehouse_path, "alter table users add column sub varchar")
    sql(
        warehouse_path,
        "update users set sub = case when id % 2 = 0 then 'subscribed' else 'unsubscribed' end",
    )
    sql(warehouse_path, "update users set sub = 'maybe' where id = 5")
    yaml = sync("upsert", "subscription_group:grp-1").replace(
        "  - {from: plan, to: plan}", "  - {from: sub, to: subscription_state}"
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_braze", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (5, 1)
    assert braze.subscriptions[("ext-2", "grp-1")] == "subscribed"
    assert braze.subscriptions[("ext-3", "grp-1")] == "unsubscribed"
    assert ("ext-5", "grp-1") not in braze.subscriptions


def test_mapped_time_and_quantity_are_brazes_own_fields(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 4)
    sql(
        warehouse_path,
        "alter table users add column bought_at timestamp; alter table users add column qty int; "
        "update users set bought_at = timestamp '2026-01-15 10:00:00' + to_hours(id::bigint), "
        "qty = id; update users set qty = 150 where id = 4",
    )
    purchases = sync(
        "events",
        "purchases",
        extra="  - {from: sku, to: product_id}\n  - {from: cur, to: currency}\n"
        "  - {from: price, to: price}\n  - {from: bought_at, to: time}\n"
        "  - {from: qty, to: quantity}",
    )
    out = run_sync(defs_from_yaml(DEST, purchases), "to_braze", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (3, 1)
    by_user = {p["external_id"]: p for p in braze.purchases}
    assert by_user["ext-2"]["time"] == "2026-01-15T12:00:00.000+00:00"
    assert by_user["ext-2"]["quantity"] == 2
    assert by_user["ext-2"]["properties"] == {"email": "u2@example.com", "plan": "pro"}
    [(error,)] = sql(
        warehouse_path, "select error from _retl.sync_record_results where status = 'rejected'"
    )
    assert error == "quantity 150 is not a whole number from 1 to 100, as Braze requires"


def test_events_without_a_mapped_time_get_the_runs_start(
    braze: FakeBraze, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync("events", "Plan Reviewed")), "to_braze", instance)
    assert out.status == "succeeded"
    # The run's start (its id begins with it), the same for every event; not the send time.
    start = dt.datetime.strptime(out.summary["run_id"][:16], "%Y%m%dT%H%M%SZ")
    stamps = {e["time"] for e in braze.events}
    assert stamps == {start.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")}
    assert all("time" not in e["properties"] for e in braze.events)
