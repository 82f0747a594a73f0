"""Turn a sync's `model:` into the SELECT the warehouse runs."""

from __future__ import annotations

import json
from pathlib import Path

from retl_dagster.common.settings import (
    DBT_MANIFEST,
    expand_env_refs,
    is_url,
    warehouse_location,
)
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.warehouse import quote_relation


def dbt_target(location: str | None = None) -> tuple[str, dict[str, str]]:
    """The dbt target (profiles.yml) for the warehouse, and the environment it reads."""
    location = location or warehouse_location()
    if not is_url(location):
        return "dev", {"RETL_WAREHOUSE": location}
    import sqlalchemy as sa

    if location.lower().startswith("snowflake"):
        return "snowflake", _snowflake_dbt_env(location)
    url = sa.engine.make_url(expand_env_refs(location))
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            f"dbt models run on DuckDB, PostgreSQL or Snowflake; RETL_WAREHOUSE names "
            f"{url.get_backend_name()}. Fix: use a sql or table model there"
        )
    return "pg", {
        "RETL_DBT_PG_HOST": url.host or "localhost",
        "RETL_DBT_PG_PORT": str(url.port or 5432),
        "RETL_DBT_PG_USER": url.username or "postgres",
        "RETL_DBT_PG_PASSWORD": url.password or "",
        "RETL_DBT_PG_DBNAME": url.database or "postgres",
    }


def _snowflake_dbt_env(location: str) -> dict[str, str]:
    """The `snowflake` target's variables (dbt_models/profiles.yml) from a snowflake:// URL."""
    from retl_dagster.engine.warehouse_snowflake import connect_args

    args = connect_args(location)
    password = str(args.get("password", ""))
    if str(args.get("authenticator", "")).upper() == "PROGRAMMATIC_ACCESS_TOKEN":
        password = str(args.get("token", ""))  # Snowflake takes the token as the password
    return {
        "RETL_DBT_SF_ACCOUNT": str(args["account"]),
        "RETL_DBT_SF_USER": str(args["user"]),
        "RETL_DBT_SF_PASSWORD": password,
        "RETL_DBT_SF_PRIVATE_KEY_PATH": str(args.get("private_key_file", "")),
        "RETL_DBT_SF_PRIVATE_KEY_PASSPHRASE": str(args.get("private_key_file_pwd", "")),
        "RETL_DBT_SF_DATABASE": str(args["database"]),
        "RETL_DBT_SF_WAREHOUSE": str(args.get("warehouse", "")),
        "RETL_DBT_SF_ROLE": str(args.get("role", "")),
        "RETL_DBT_SF_HOST": str(args.get("host", "")),
        "RETL_DBT_SF_PORT": str(args.get("port", 0)),
        "RETL_DBT_SF_PROTOCOL": str(args.get("protocol", "")),
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


def _dbt_relations(manifest_path: Path) -> dict[tuple[str, str], str]:
    """(schema, relation name) -> dbt node name, lower-cased, for models, seeds and snapshots."""
    if not manifest_path.exists():
        return {}
    nodes = json.loads(manifest_path.read_text())["nodes"]
    return {
        (str(n["schema"]).lower(), str(n.get("alias") or n["name"]).lower()): n["name"]
        for n in nodes.values()
        if n["resource_type"] in ("model", "seed", "snapshot")
    }


def sql_reads(sql: str, manifest_path: Path = DBT_MANIFEST) -> list[tuple[str, ...]]:
    """What an inline SQL model reads, so its asset is drawn downstream of them: `("dbt", name)`
    for a dbt model or seed (matched on its schema and alias, or on its name alone), else the
    table's own parts (`("analytics", "users")`). Parsed with sqlglot; CTEs are not tables.
    SQL sqlglot cannot parse reads nothing (the model still runs; it is only not linked)."""
    import sqlglot
    import sqlglot.expressions as exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return []
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    dbt = _dbt_relations(manifest_path)
    by_name = {rel: name for (_, rel), name in dbt.items()}
    out: list[tuple[str, ...]] = []
    for table in tree.find_all(exp.Table):
        name, schema = table.name.lower(), table.db.lower()
        if not name or (not schema and name in ctes):
            continue
        model = dbt.get((schema, name)) if schema else by_name.get(name)
        read = ("dbt", model) if model else tuple(p for p in (schema, name) if p)
        if read not in out:
            out.append(read)
    return out
