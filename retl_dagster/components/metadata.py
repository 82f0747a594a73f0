"""Dagster's own metadata for retl's assets: kinds, column schema, column lineage, row counts.

The keys are Dagster's table metadata (`dagster/column_schema`, `dagster/column_lineage`,
`dagster/row_count`, `dagster/table_name`, `dagster/uri`), written as plain keys because
`TableMetadataSet` is not exported by the pinned Dagster (1.13); the values are its public types.
"""

from urllib.parse import urlsplit

import dagster as dg

from retl_dagster.common.settings import is_url, warehouse_location
from retl_dagster.engine.config import SyncConfig

CONFIG_METADATA_KEY = "retl/config"
"""A sync's declaration, as JSON metadata on its diff and load assets."""
_WAREHOUSE_KINDS = {"postgresql": "postgres", "postgres": "postgres", "snowflake": "snowflake"}


def warehouse_kind() -> str:
    """The kind of the warehouse `RETL_WAREHOUSE` names: duckdb, postgres or snowflake."""
    location = warehouse_location()
    if not is_url(location):
        return "duckdb"
    scheme = urlsplit(location).scheme.split("+")[0]
    return _WAREHOUSE_KINDS.get(scheme, scheme)


def field_sources(config: SyncConfig) -> dict[str, list[str]]:
    """Each destination field the sync writes -> the model columns it comes from (a static
    value: none). The match field comes from the match column."""
    sources = {m.to: list(m.columns()) for m in config.mappings}
    if config.match:
        sources.setdefault(config.match.field, [config.match.column])
    return sources


def declared_schema(config: SyncConfig) -> dg.TableSchema:
    """The destination fields as the declaration says them (types come with the first run)."""
    columns = []
    for m in config.mappings:
        cols = ", ".join(m.columns())
        said = f"from model column(s) {cols}" if cols else "a static value"
        columns.append(
            dg.TableColumn(m.to, type=m.kind.__class__.__name__.lower(), description=said)
        )
    if config.match and config.match.field not in {c.name for c in columns}:
        columns.append(
            dg.TableColumn(
                config.match.field,
                type="match",
                description=f"matched on model column {config.match.column}",
            )
        )
    return dg.TableSchema(columns=columns)


def written_schema(config: SyncConfig, types: dict[str, str]) -> dg.TableSchema:
    """The destination fields a run wrote, with the warehouse type of each value."""
    schema = declared_schema(config)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, type=types.get(c.name, c.type), description=c.description)
            for c in schema.columns
        ]
    )


def column_lineage(config: SyncConfig, model: dg.AssetKey) -> dg.TableColumnLineage:
    """Destination field <- the model columns it is made from."""
    return dg.TableColumnLineage(
        deps_by_column={
            field: [dg.TableColumnDep(asset_key=model, column_name=c) for c in columns]
            for field, columns in field_sources(config).items()
        }
    )


def load_definition_metadata(config: SyncConfig) -> dict[str, object]:
    md: dict[str, object] = {
        "dagster/column_schema": dg.MetadataValue.table_schema(declared_schema(config))
    }
    if config.object:
        md["dagster/table_name"] = f"{config.destination}.{config.object}"
    return md


def load_materialization_metadata(
    config: SyncConfig, model: dg.AssetKey, types: dict[str, str]
) -> dict[str, object]:
    return {
        "dagster/column_schema": dg.MetadataValue.table_schema(written_schema(config, types)),
        "dagster/column_lineage": dg.MetadataValue.column_lineage(column_lineage(config, model)),
    }
