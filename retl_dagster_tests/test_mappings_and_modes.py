"""Mapping kinds and sync modes, end to end on nested data (DuckDB STRUCT/LIST/JSON columns,
PostgreSQL jsonb, Snowflake OBJECT/ARRAY/VARIANT), delivered over loopback."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    ALL_WAREHOUSES,
    WEBHOOK_DESTINATION,
    defs_from_yaml,
    is_snowflake,
    sql,
)

WAREHOUSES = ALL_WAREHOUSES


def orders(path: Path | str) -> None:
    if is_snowflake(path):  # OBJECT, ARRAY and VARIANT (Snowflake's VALUES takes no functions)
        sql(
            path,
            """create or replace table orders (id number, email varchar, city varchar,
                address object, items array, extra variant, coupon varchar);
            insert into orders
            select 1, 'a@example.com', 'Lyon',
                parse_json('{"street": "1 rue A", "geo": {"lat": 45.7, "lon": 4.8}}')::object,
                parse_json('[{"sku": "TEE", "qty": 2, "price": 19.00}, {"sku": "MUG", "qty": 1}]')
                    ::array,
                parse_json('{"tier": "gold", "flags": {"vip": true}}'), null
            union all
            select 2, 'b@example.com', null,
                parse_json('{"street": "2 rue B", "geo": {"lat": 48.8, "lon": 2.3}}')::object,
                parse_json('[]')::array, parse_json('{"tier": "silver"}'), 'promo'""",
        )
        return
    if isinstance(path, str):  # PostgreSQL: nested values are jsonb
        sql(
            path,
            """drop table if exists orders; create table orders as select * from (values
            (1, 'a@example.com', 'Lyon',
             '{"street": "1 rue A", "geo": {"lat": 45.7, "lon": 4.8}}'::jsonb,
             '[{"sku": "TEE", "qty": 2, "price": 19.00}, {"sku": "MUG", "qty": 1}]'::jsonb,
             '{"tier": "gold", "flags": {"vip": true}}'::json, null),
            (2, 'b@example.com', null, '{"street": "2 rue B", "geo": {"lat": 48.8, "lon": 2.3}}',
             '[]', '{"tier": "silver"}', 'promo')
            ) t(id, email, city, address, items, extra, coupon)""",
        )
        return
    sql(
        path,
        """create or replace table orders as select * from (values
        (1, 'a@example.com', 'Lyon', {'street': '1 rue A', 'geo': {'lat': 45.7, 'lon': 4.8}},
         [{'sku': 'TEE', 'qty': 2, 'price': 19.00::decimal(10,2)}, {'sku': 'MUG', 'qty': 1}],
         '{"tier": "gold", "flags": {"vip": true}}'::json, null),
        (2, 'b@example.com', null, {'street': '2 rue B', 'geo': {'lat': 48.8, 'lon': 2.3}},
         [], '{"tier": "silver"}'::json, 'promo')
        ) t(id, email, city, address, items, extra, coupon)""",
    )


SYNC = """
name: orders_hook
model: {table: orders}
primary_key: id
destination: hook
mode: upsert
mappings:
  - {from: email, to: email}
  - {to: source, static: warehouse}
  - to: shipping
    object: {city: city, street: address.street, lat: address.geo.lat, tier: extra.tier}
  - {from: address, to: address_raw, object: select}
  - {from: items, to: lines, array: {sku: sku, quantity: qty, unit_price: price}}
  - {from: items, to: items_raw, array: select}
  - {from: extra, to: extra_raw, object: select}
  - {from: coupon, to: coupon, sync_nulls: false}
delete_behavior: delete
"""


def test_every_mapping_kind_on_nested_data(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path)
    out = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, SYNC), "orders_hook", instance)
    assert out.status == "succeeded", out.summary
    by_id = {r["id"]: r["fields"] for r in receiver.delivered()}
    one, two = by_id["1"], by_id["2"]
    assert one["source"] == "warehouse"
    assert one["shipping"] == {"city": "Lyon", "street": "1 rue A", "lat": 45.7, "tier": "gold"}
    assert two["shipping"]["city"] is None  # a customized object keeps its null properties
    assert one["address_raw"] == {"street": "1 rue A", "geo": {"lat": 45.7, "lon": 4.8}}
    # An element missing a property simply lacks it.
    assert one["lines"] == [
        {"sku": "TEE", "quantity": 2, "unit_price": 19},
        {"sku": "MUG", "quantity": 1},
    ]
    assert two["lines"] == []
    assert one["items_raw"][0] == {"sku": "TEE", "qty": 2, "price": 19}
    assert one["extra_raw"] == {"tier": "gold", "flags": {"vip": True}}
    assert "coupon" not in one and two["coupon"] == "promo"  # sync_nulls: false


def test_changing_a_mapping_resends_what_it_affects(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path)
    run_sync(defs_from_yaml(WEBHOOK_DESTINATION, SYNC), "orders_hook", instance)
    receiver.requests.clear()
    renamed = SYNC.replace("static: warehouse", "static: dwh")
    out = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, renamed), "orders_hook", instance)
    assert out.summary["changed"] == 2
    assert {r["fields"]["source"] for r in receiver.delivered()} == {"dwh"}
    receiver.requests.clear()
    again = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, renamed), "orders_hook", instance)
    assert again.summary["changed"] == 0 and receiver.requests == []


MODES = """
name: people_hook
model: {table: people}
primary_key: id
destination: hook
mode: MODE
mappings: [{from: name, to: name}]
delete_behavior: DELETE
"""


def people_round(path: Path) -> None:
    sql(path, "update people set name = 'changed' where id = 1")
    sql(path, "delete from people where id = 2")
    sql(path, "insert into people values (9, 'new')")


@pytest.mark.parametrize(
    ("mode", "delete", "second_run_sent"),
    [
        ("upsert", "delete", {("changed", "1"), ("removed", "2"), ("added", "9")}),
        ("mirror", "delete", {("changed", "1"), ("removed", "2"), ("added", "9")}),
        ("update", "nothing", {("changed", "1"), ("added", "9")}),
        ("insert", "nothing", {("added", "9")}),
        ("insert", "delete", {("added", "9"), ("removed", "2")}),
        ("events", "nothing", {("event", "9")}),
        ("upsert", "clear", {("changed", "1"), ("changed", "2"), ("added", "9")}),
    ],
)
def test_each_mode_sends_what_it_says(
    mode: str,
    delete: str,
    second_run_sent: set[tuple[str, str]],
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(
        warehouse_path,
        "create table people as select * from (values (1, 'a'), (2, 'b'), (3, 'c')) as t(id, name)",
    )
    defs = defs_from_yaml(
        WEBHOOK_DESTINATION, MODES.replace("MODE", mode).replace("DELETE", delete)
    )
    run_sync(defs, "people_hook", instance)
    receiver.requests.clear()
    people_round(warehouse_path)
    out = run_sync(defs, "people_hook", instance)
    assert out.status == "succeeded"
    assert {(r["op"], r["id"]) for r in receiver.delivered()} == second_run_sent
    if delete == "clear":
        cleared = [r for r in receiver.delivered() if r["id"] == "2"]
        assert cleared[0]["fields"] == {"name": None}
    # Nothing skipped comes back: a third run with no changes sends nothing.
    receiver.requests.clear()
    third = run_sync(defs, "people_hook", instance)
    assert (third.summary["added"], third.summary["changed"], third.summary["removed"]) == (0, 0, 0)
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("{to: x}", "needs exactly one of `from`, `static` or an `object"),
        ("{from: a, to: x, static: 1}", "got from, static"),
        ("{to: x, array: select}", "needs exactly one of"),
        ("{from: a, to: x, object: select, array: select}", "sets both `object` and `array`"),
    ],
)
def test_a_wrong_mapping_is_refused_naming_it(mapping: str, message: str) -> None:
    with pytest.raises(Exception, match="mappings") as exc:
        defs_from_yaml(
            WEBHOOK_DESTINATION,
            MODES.replace("[{from: name, to: name}]", f"[{mapping}]")
            .replace("MODE", "upsert")
            .replace("DELETE", "nothing"),
        )
    assert message in str(exc.value)


def test_a_path_into_a_missing_column_is_named(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path)
    bad = SYNC.replace("street: address.street", "street: adress.street")
    out = run_sync(defs_from_yaml(WEBHOOK_DESTINATION, bad), "orders_hook", instance)
    assert out.status == "failed"
    assert (
        "field 'mappings[3].object.adress': column 'adress' is not in the model"
        in (out.summary["error"])
    )
