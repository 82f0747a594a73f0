"""A dbt model's asset key comes from the project's DagsterDbtTranslator, not an assumed
`[name]`: a translator that prefixes keys keeps a sync's lineage and `run_on_model_update`."""

# No `from __future__ import annotations`: Dagster inspects the context parameter's type.
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from retl_dagster.common.settings import DBT_MANIFEST
from retl_dagster.components.dbt_keys import dbt_asset_key, use_dbt_assets
from retl_dagster_tests.harness import WEBHOOK_DESTINATION, defs_from_yaml


class Prefixing(DagsterDbtTranslator):
    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.replace_attributes(key=spec.key.with_prefix("analytics"))


@dbt_assets(manifest=DBT_MANIFEST, dagster_dbt_translator=Prefixing())
def prefixed_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):  # pragma: no cover
    yield from dbt.cli(["build"], context=context).stream()


ORDERS = dg.AssetKey(["analytics", "orders"])
SYNC = """
name: orders_hook
model: {dbt: orders}
primary_key: order_id
destination: hook
mappings: [{from: order_id, to: id}]
run_on_model_update: true
"""


def test_the_project_translator_gives_the_demo_its_keys() -> None:
    assert dbt_asset_key("orders") == dg.AssetKey(["orders"])
    assert dbt_asset_key("raw_users") == dg.AssetKey(["raw_users"])  # a seed too


def test_a_prefixing_translator_keeps_lineage_and_model_updates(
    instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    with use_dbt_assets(prefixed_dbt):
        assert dbt_asset_key("orders") == ORDERS
        defs = defs_from_yaml(
            WEBHOOK_DESTINATION,
            SYNC,
            SYNC.replace("orders_hook", "inline_hook").replace(
                "{dbt: orders}", '{sql: "select order_id from orders"}'
            ),
        )
    diff = defs.resolve_assets_def(dg.AssetKey(["retl", "orders_hook", "diff"]))
    assert ORDERS in diff.asset_deps[diff.key]
    inline = defs.resolve_assets_def(dg.AssetKey(["retl", "inline_hook", "model"]))
    assert ORDERS in inline.asset_deps[inline.key]

    sensor = defs.resolve_sensor_def("retl_orders_hook_on_model_update")
    tick = lambda cursor: sensor(  # noqa: E731
        dg.build_sensor_context(instance=instance, cursor=cursor)
    )
    baseline = tick(None)
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["orders"])))
    assert not tick(baseline.cursor).run_requests  # the unprefixed key is not the model
    instance.report_runless_asset_event(dg.AssetMaterialization(ORDERS))
    assert len(tick(baseline.cursor).run_requests) == 1
