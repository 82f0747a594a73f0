"""retl's assets speak Dagster's own metadata: kinds, column schema, column lineage, row counts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import WEBHOOK_DESTINATION, defs_from_yaml
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers

LOAD = dg.AssetKey(["retl", "customers_hook", "load"])
DIFF = dg.AssetKey(["retl", "customers_hook", "diff"])
MODEL = dg.AssetKey(["warehouse", "customers"])


def kinds(defs: dg.Definitions, key: dg.AssetKey) -> set[str]:
    return set(defs.resolve_asset_graph().get(key).kinds)


def test_the_load_asset_carries_its_destinations_type_and_its_warehouse_as_kinds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    assert kinds(defs, LOAD) == {"retl", "webhook", "duckdb"}
    monkeypatch.setenv("RETL_WAREHOUSE", "postgresql+psycopg://u@127.0.0.1:5432/db")
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    assert kinds(defs, LOAD) == {"retl", "webhook", "postgres"}
    assert kinds(defs, DIFF) == {"retl", "postgres"} and "duckdb" not in kinds(defs, MODEL)
    schema = defs.resolve_asset_graph().get(LOAD).metadata["dagster/column_schema"].schema
    assert [c.name for c in schema.columns] == ["email", "plan", "lifetime_value"]


def latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, object]:
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    return dict(event.asset_materialization.metadata)


def test_a_run_records_the_fields_it_wrote_their_lineage_and_row_counts(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 12)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    assert run_sync(defs, "customers_hook", instance).status == "succeeded"

    load = latest(instance, LOAD)
    schema = load["dagster/column_schema"].schema  # type: ignore[attr-defined]
    types = {c.name: c.type.upper() for c in schema.columns}
    assert types["email"] == "VARCHAR" and types["lifetime_value"].startswith("DECIMAL")
    lineage = load["dagster/column_lineage"].column_lineage  # type: ignore[attr-defined]
    assert lineage.deps_by_column["lifetime_value"] == [
        dg.TableColumnDep(asset_key=MODEL, column_name="ltv")
    ]
    assert latest(instance, DIFF)["dagster/row_count"].value == 12  # type: ignore[attr-defined]
    stages = load["stage_seconds"].data  # type: ignore[attr-defined]
    assert set(stages) == {"query", "diff", "map", "send", "commit"}
    observed = instance.fetch_observations(MODEL, limit=1).records[0].asset_observation
    assert observed is not None and observed.metadata["dagster/row_count"].value == 12
