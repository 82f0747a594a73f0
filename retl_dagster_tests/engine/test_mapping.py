from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

from retl_dagster.common.encoding import to_json_value
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.mapping import Mapper
from retl_dagster.engine.warehouse import Warehouse


def test_warehouse_values_round_trip_through_json(tmp_path: Path) -> None:
    """Real DuckDB values, as the load stage reads them (Arrow -> Python), encode to strict JSON."""
    with Warehouse(str(tmp_path / "w.duckdb")) as wh:
        [batch] = list(
            wh.stream(
                """select 12.50::decimal(12,2) as price,
                      123456789012345678.123::decimal(38,3) as big,
                      date '2026-01-02' as d,
                      timestamptz '2026-01-02 03:04:05+00' as ts,
                      '4d1f6a53-1f3a-4b5e-9a49-0c6f1a2b3c4d'::uuid as u,
                      '\\xDE\\xAD'::blob as b,
                      'nan'::double as nan, 'inf'::double as inf,
                      {'a': 1, 'b': [1, 2]} as s,
                      [{'sku': 'x', 'q': 2}] as l,
                      map {'k': 1} as m"""
            )
        )
    row = {k: to_json_value(v) for k, v in batch.to_pylist()[0].items()}
    assert row == {
        "price": 12.5,
        "big": "123456789012345678.123",
        "d": "2026-01-02",
        "ts": "2026-01-02T03:04:05+00:00",
        "u": "4d1f6a53-1f3a-4b5e-9a49-0c6f1a2b3c4d",
        "b": "3q0=",
        "nan": None,
        "inf": None,
        "s": {"a": 1, "b": [1, 2]},
        "l": [{"sku": "x", "q": 2}],
        "m": {"k": 1},
    }
    json.dumps(row, allow_nan=False)  # strict JSON


def test_plain_python_values() -> None:
    assert to_json_value(Decimal("100")) == 100
    assert to_json_value(dt.time(1, 2)) == "01:02:00"
    assert to_json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"


def config(**over: object) -> SyncConfig:
    return SyncConfig.model_validate(
        {
            "name": "s",
            "model": {"table": "t"},
            "primary_key": "id",
            "destination": "d",
            "mappings": [
                {"from": "email", "to": "Email"},
                {"from": "city", "to": "City", "sync_nulls": False},
            ],
            **over,
        }
    )


def test_mapping_renames_and_sync_nulls_false_omits_the_field() -> None:
    rec = Mapper(config()).record("added", "1", {"id": 1, "email": "a@b", "city": None, "x": 9})
    assert (rec.op, rec.key, rec.fields) == ("added", "1", {"Email": "a@b"})


def test_removed_carries_only_the_key_and_clear_nulls_the_mapped_fields() -> None:
    assert Mapper(config(delete_behavior="delete")).record("removed", "1", {}).fields == {}
    cleared = Mapper(config(delete_behavior="clear")).record("removed", "1", {})
    assert (cleared.op, cleared.fields) == ("changed", {"Email": None, "City": None})


def test_events_mode_sends_events() -> None:
    assert Mapper(config(mode="events")).record("added", "1", {"email": "x"}).op == "event"
