"""Cross-declaration checks Dagster cannot make: a sync's destination exists and supports it."""

from __future__ import annotations

import json

import dagster as dg

from retl_dagster.components.alerts import ALERTS_RESOURCE, AlertChannels
from retl_dagster.components.destination_resources import DestinationResource
from retl_dagster.components.sync import CONFIG_METADATA_KEY
from retl_dagster.engine.config import ConfigError, SyncConfig
from retl_dagster.engine.references import reference_problems, sync_shape


def sync_configs(defs: dg.Definitions) -> list[SyncConfig]:
    """Every sync in the definitions, read back from its diff asset's metadata."""
    configs: dict[str, SyncConfig] = {}
    for asset in defs.assets or []:
        if not isinstance(asset, dg.AssetsDefinition):
            continue
        for spec in asset.specs:
            raw = spec.metadata.get(CONFIG_METADATA_KEY)
            if raw is not None:
                data = raw.value if isinstance(raw, dg.JsonMetadataValue) else raw
                cfg = SyncConfig.model_validate(data)
                configs[cfg.name] = cfg
    return sorted(configs.values(), key=lambda c: c.name)


def check_references(defs: dg.Definitions) -> None:
    """Raise the first reference problem of the definitions' syncs (strict loading)."""
    resources = defs.resources or {}
    destinations = {
        r.name: (r.destination_type, None)
        for r in resources.values()
        if isinstance(r, DestinationResource)
    }
    options = {
        r.name: json.loads(r.options_json)
        for r in resources.values()
        if isinstance(r, DestinationResource)
    }
    alerts = resources.get(ALERTS_RESOURCE)
    configs = sync_configs(defs)
    problems = reference_problems(
        configs,
        destinations,
        alerts if isinstance(alerts, AlertChannels) else None,
        options=options,
    )
    for cfg in configs:  # in name order, so the same mistake always reads the same
        if cfg.name in problems:
            raise problems[cfg.name]


def remote_property_errors(defs: dg.Definitions) -> list[str]:
    """Ask each destination's live API for its objects' property lists (where it has them) and
    name every mapped field that is not one; also any destination that cannot be reached or
    whose configuration or credentials are wrong. For `retl validate`."""
    configs = sync_configs(defs)
    errors: list[str] = []
    for res in (defs.resources or {}).values():
        if not isinstance(res, DestinationResource):
            continue
        try:
            with res.client() as client:
                for cfg in configs:
                    if cfg.destination != res.name or not cfg.object:
                        continue
                    names = client.remote_properties(cfg.object)
                    if names is None:
                        continue
                    for field, problem, fix in client.unknown_properties(sync_shape(cfg), names):
                        errors.append(str(ConfigError(cfg.name, field, problem, fix)))
        except Exception as exc:  # the API's own words: auth, network, bad options
            errors.append(res.redact(str(exc)))
    return errors
