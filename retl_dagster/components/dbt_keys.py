"""The asset key of a dbt model or seed, as the project's dbt assets make it: their
`DagsterDbtTranslator` decides (a translator that prefixes keys, `["analytics", name]`, keeps a
sync's lineage and `run_on_model_update` right), not an assumed `AssetKey([name])`.

The keys are read from the `@dbt_assets` definitions of `retl_dagster/defs/dbt/assets.py`, the
module the code location loads anyway (Python imports it once; nothing is built twice). Each key
there is the translator's answer for one manifest node, tagged with the node's unique id."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

DBT_ASSETS_MODULE = "retl_dagster.defs.dbt.assets"
UNIQUE_ID = "dagster_dbt/unique_id"  # dagster_dbt.asset_utils.DAGSTER_DBT_UNIQUE_ID_METADATA_KEY

_override: list[Sequence[dg.AssetsDefinition]] = []


def dbt_asset_key(node: str) -> dg.AssetKey:
    """The key of dbt model (or seed, snapshot) `node`; dagster-dbt's default, `[node]`, when
    the project has no dbt assets or none of them is that node (its sync then fails its own
    check: no dbt model of that name)."""
    return _keys_by_name().get(node.lower(), dg.AssetKey([node]))


@contextmanager
def use_dbt_assets(*assets: dg.AssetsDefinition) -> Iterator[None]:
    """Read the keys from these `@dbt_assets` definitions instead of the project's (tests)."""
    _override.append(assets)
    _keys_by_name.cache_clear()
    try:
        yield
    finally:
        _override.pop()
        _keys_by_name.cache_clear()


def project_dbt_assets() -> list[dg.AssetsDefinition]:
    """The `@dbt_assets` definitions in the project's dbt module; none without that module."""
    if _override:
        return list(_override[-1])
    try:
        module = importlib.import_module(DBT_ASSETS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and DBT_ASSETS_MODULE.startswith(exc.name):
            return []  # no dbt project in this code location
        raise
    return [
        value
        for value in vars(module).values()
        if isinstance(value, dg.AssetsDefinition) and keys_by_dbt_name([value])
    ]


def keys_by_dbt_name(assets: Sequence[dg.AssetsDefinition]) -> Mapping[str, dg.AssetKey]:
    """dbt node name (lower case) -> its asset key, in the given `@dbt_assets` definitions."""
    keys: dict[str, dg.AssetKey] = {}
    for assets_def in assets:
        for spec in assets_def.specs:
            unique_id = (spec.metadata or {}).get(UNIQUE_ID)
            if isinstance(unique_id, str) and unique_id.count(".") >= 2:
                # model.<package>.<name>[.v<version>]
                keys.setdefault(unique_id.split(".")[2].lower(), spec.key)
    return keys


@functools.cache
def _keys_by_name() -> Mapping[str, dg.AssetKey]:
    return keys_by_dbt_name(project_dbt_assets())


def project_translator() -> DagsterDbtTranslator:
    """The translator of the project's dbt assets (dagster-dbt's default without any): the dbt
    Cloud workspace's assets are keyed by it too, so a sync finds its model either way."""
    assets = project_dbt_assets()
    if not assets:
        return DagsterDbtTranslator()
    return get_manifest_and_translator_from_dbt_assets(assets[:1])[1]
