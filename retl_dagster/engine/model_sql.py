"""Turn a sync's `model:` into the SELECT the warehouse runs."""

from __future__ import annotations

import json
from pathlib import Path

from retl_dagster.common.settings import DBT_MANIFEST, is_url, warehouse_location
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.warehouse import quote_relation


def dbt_target(location: str | None = None) -> tuple[str, dict[str, str]]:
    """The dbt target (profiles.yml) for the warehouse, and the environment it reads."""
    location = location or warehouse_location()
    if not is_url(location):
        return "dev", {"RETL_WAREHOUSE": location}
    import sqlalchemy as sa

    url = sa.engine.make_url(location)
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            f"dbt models run on DuckDB or PostgreSQL; RETL_WAREHOUSE names "
            f"{url.get_backend_name()}. Fix: use a sql or table model there"
        )
    return "pg", {
        "RETL_DBT_PG_HOST": url.host or "localhost",
        "RETL_DBT_PG_PORT": str(url.port or 5432),
        "RETL_DBT_PG_USER": url.username or "postgres",
        "RETL_DBT_PG_PASSWORD": url.password or "",
        "RETL_DBT_PG_DBNAME": url.database or "postgres",
    }


def dbt_relation(model: str, manifest_path: Path = DBT_MANIFEST) -> str:
    """`schema.alias` of a dbt model, read from the manifest dbt wrote (`dbt parse`)."""
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"{manifest_path} is missing; run `dbt parse` in {manifest_path.parent.parent}"
        )
    nodes = json.loads(manifest_path.read_text())["nodes"]
    for node in nodes.values():
        if node["resource_type"] in ("model", "seed", "snapshot") and node["name"] == model:
            return f"{node['schema']}.{node.get('alias') or node['name']}"
    raise KeyError(model)


def model_select(config: SyncConfig, manifest_path: Path = DBT_MANIFEST) -> str:
    """The SQL that yields the model's rows."""
    src = config.model
    if src.sql:
        return src.sql.strip().rstrip(";")
    if src.table:
        return f"select * from {quote_relation(src.table)}"
    assert src.dbt
    try:
        return f"select * from {quote_relation(dbt_relation(src.dbt, manifest_path))}"
    except KeyError:
        raise ConfigError(
            config.name,
            "model.dbt",
            f"no dbt model named '{src.dbt}' in {manifest_path}",
            "name a model under dbt_models/models (and run `dbt parse` after adding one)",
        ) from None
