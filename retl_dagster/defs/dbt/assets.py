"""The dbt project's models as Dagster assets (group `dbt_models`)."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from retl_dagster.common.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR, warehouse_location
from retl_dagster.components.pools import warehouse_pool
from retl_dagster.engine.model_sql import dbt_target

# definitions.py makes sure the manifest exists (and re-parses under `dagster dev`) with the
# venv's dbt: DbtProject.prepare_if_dev() would look for `dbt` on PATH, which an unactivated
# venv does not put there.
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class _Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "dbt_models"


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=_Translator(),
    pool=warehouse_pool(),
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the selected models into the warehouse RETL_WAREHOUSE names: target `dev`
    (DuckDB) or `pg` (PostgreSQL)."""
    # dbt writes where retl reads, even when only RETL_DATA_DIR was set.
    target, env = dbt_target()
    os.environ.update(env)
    if target == "dev":
        Path(warehouse_location()).parent.mkdir(parents=True, exist_ok=True)  # dbt-duckdb won't
    yield from dbt.cli(["build", "--target", target], context=context).stream()


@dg.definitions
def defs() -> dg.Definitions:
    # A module with a @definitions function contributes only what that function returns.
    return dg.Definitions(
        assets=[dbt_models],
        resources={"dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)},
    )
