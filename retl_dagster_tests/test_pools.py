"""Concurrency pools: each destination's loads in a pool of its own, limited as declared; the
warehouse's writers share one pool only where the warehouse has a single writer (DuckDB)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.pools import POOL_SENSOR, limits_of
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import defs_from_yaml
from retl_dagster_tests.test_sync_e2e import make_customers

DESTINATIONS = """
destinations:
  crm_hook: {type: webhook, url: "http://127.0.0.1:9/hook"}
  slow_partner: {type: webhook, url: "http://127.0.0.1:9/hook", pool_limit: 2}
  export: {type: file, path: out.jsonl}
"""

FILE_SYNC = """
name: to_file
model: {table: customers}
primary_key: id
destination: export
mappings: [{from: email, to: email}]
"""


def limits(instance: dg.DagsterInstance, pools: list[str]) -> dict[str, int | None]:
    infos = instance.event_log_storage.get_concurrency_infos(pools)
    return {p: infos[p].slot_count for p in pools}


def test_each_destination_has_a_pool_with_its_types_or_its_own_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    defs = defs_from_yaml(DESTINATIONS)
    assert limits_of(dict(defs.resources or {})) == {
        "retl_dest_crm_hook": 4,  # a webhook's default
        "retl_dest_slow_partner": 2,  # its own pool_limit
        "retl_dest_export": 1,  # one file: one writer
        "retl_warehouse": 1,  # DuckDB: one writing process
    }
    # A server warehouse has no single-writer pool: its diffs run side by side.
    monkeypatch.setenv("RETL_WAREHOUSE", "postgresql+psycopg://u@127.0.0.1:5432/db")
    assert "retl_warehouse" not in limits_of(dict(defs_from_yaml(DESTINATIONS).resources or {}))


def test_the_pool_sensor_sets_the_declared_limits_once(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    defs = defs_from_yaml(DESTINATIONS)
    sensor = defs.resolve_sensor_def(POOL_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    first = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(first, dg.SkipReason) and "retl_dest_slow_partner=2" in str(
        first.skip_message
    )
    pools = ["retl_dest_crm_hook", "retl_dest_slow_partner", "retl_dest_export"]
    assert limits(instance, pools) == dict(zip(pools, [4, 2, 1], strict=True))
    # A limit changed by hand in the UI is set back to the YAML's at the next tick.
    instance.event_log_storage.set_concurrency_slots("retl_dest_crm_hook", 9)
    second = sensor(dg.build_sensor_context(instance=instance))
    assert "retl_dest_crm_hook=4" in str(second.skip_message)  # type: ignore[union-attr]
    third = sensor(dg.build_sensor_context(instance=instance))
    assert "as declared" in str(third.skip_message)  # type: ignore[union-attr]


def test_retl_sync_applies_the_limits_and_the_load_runs_in_its_destinations_pool(
    instance: dg.DagsterInstance, warehouse_path: Path, tmp_path: Path
) -> None:
    make_customers(warehouse_path, 5)
    yaml = DESTINATIONS.replace("path: out.jsonl", f"path: {tmp_path / 'out.jsonl'}")
    defs = defs_from_yaml(yaml, FILE_SYNC)
    outcome = run_sync(defs, "to_file", instance)
    assert outcome.status == "succeeded", outcome.summary
    assert limits(instance, ["retl_dest_export", "retl_dest_slow_partner"]) == {
        "retl_dest_export": 1,
        "retl_dest_slow_partner": 2,
    }
    load = defs.resolve_assets_def(dg.AssetKey(["retl", "to_file", "load"]))
    assert load.op.pool == "retl_dest_export"


def test_a_pool_limit_out_of_bounds_names_the_destination_and_the_field() -> None:
    bad = DESTINATIONS.replace("pool_limit: 2", "pool_limit: 0")
    with pytest.raises(Exception, match="destination 'slow_partner', field 'pool_limit': 0 is"):
        defs_from_yaml(bad)


def test_destinations_declared_in_two_folders_each_keep_their_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A project may split its destinations over several components; their pool sensors do not
    collide, and the code location loads."""
    from dagster.components.core.component_tree import ComponentTree

    from retl_dagster.components import Destinations

    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    context = ComponentTree.for_test().load_context
    crm = Destinations.resolve_from_yaml(
        'destinations: {crm_hook: {type: webhook, url: "http://127.0.0.1:9/hook"}}'
    ).build_defs(context.for_path(context.path / "defs" / "destinations"))
    ads = Destinations.resolve_from_yaml(
        "destinations: {export: {type: file, path: out.jsonl}}"
    ).build_defs(context.for_path(context.path / "defs" / "ads"))
    merged = dg.Definitions.merge(crm, ads)
    names = sorted(s.name for s in merged.get_repository_def().sensor_defs)
    assert names == ["retl_pool_limits", "retl_pool_limits_ads"]
