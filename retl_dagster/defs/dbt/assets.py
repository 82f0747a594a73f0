"""The dbt project's models as Dagster assets (group `dbt_models`)."""


import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from retl_dagster.engine.models import DBT_EXECUTABLE, DBT_PROJECT_DIR

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` this re-parses on load; elsewhere definitions.py makes sure a manifest exists.
dbt_project.prepare_if_dev()


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, pool="retl_warehouse")
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the selected models; the profile reads RETL_WAREHOUSE."""
    yield from dbt.cli(["build"], context=context).stream()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)})
