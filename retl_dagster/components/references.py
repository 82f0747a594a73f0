"""Cross-declaration checks Dagster cannot make: a sync's destination exists and supports it."""

from __future__ import annotations

import dagster as dg

from retl_dagster.components.alerts import ALERTS_RESOURCE, AlertChannels
from retl_dagster.components.destination_resources import DestinationResource, resource_key
from retl_dagster.components.sync import CONFIG_METADATA_KEY
from retl_dagster.destinations import DESTINATION_TYPES
from retl_dagster.destinations.base import SyncShape
from retl_dagster.engine.config import ConfigError, SyncConfig


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


def check_sequences(configs: list[SyncConfig]) -> None:
    """`after:` names existing syncs, has no cycle, and each sequence has one first sync (a
    sequence run is the run of that sync and of the syncs after it)."""
    by_name = {c.name: c for c in configs}
    for cfg in configs:
        for i, other in enumerate(cfg.after):
            if other not in by_name:
                raise ConfigError(
                    cfg.name,
                    f"after[{i}]",
                    f"no sync named '{other}' (syncs: {', '.join(sorted(by_name))})",
                    "name a declared sync or remove it from `after`",
                )

    def roots(name: str, path: tuple[str, ...]) -> set[str]:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError(
                name, "after", f"the sequence loops: {cycle}", "remove one `after` of the loop"
            )
        after = by_name[name].after
        if not after:
            return {name}
        return set().union(*(roots(a, (*path, name)) for a in after))

    for cfg in configs:
        first = roots(cfg.name, ())
        if cfg.after and len(first) > 1:
            raise ConfigError(
                cfg.name,
                "after",
                f"it follows syncs of different sequences, started by {', '.join(sorted(first))}",
                "a sequence has one first sync: make the others follow it too",
            )


def check_references(defs: dg.Definitions) -> None:
    resources = defs.resources or {}
    declared = sorted(r.name for r in resources.values() if isinstance(r, DestinationResource))
    check_sequences(sync_configs(defs))
    for cfg in sync_configs(defs):
        res = resources.get(resource_key(cfg.destination))
        if not isinstance(res, DestinationResource):
            raise ConfigError(
                cfg.name,
                "destination",
                f"no destination named '{cfg.destination}' is declared (declared: "
                f"{', '.join(declared) or 'none'})",
                "declare it in a `retl_dagster.components.Destinations` defs.yaml "
                "(retl_dagster/defs/destinations/) or correct the name",
            )
        if cfg.alerts and (cfg.alerts.slack or cfg.alerts.email):
            channels = resources.get(ALERTS_RESOURCE)
            if not isinstance(channels, AlertChannels):
                raise ConfigError(
                    cfg.name,
                    "alerts",
                    "no alert channels are declared",
                    "declare a `retl_dagster.components.Alerts` defs.yaml (defs/alerts/)",
                )
            if cfg.alerts.slack and cfg.alerts.slack not in channels.channels():
                raise ConfigError(
                    cfg.name,
                    "alerts.slack",
                    f"no Slack channel '{cfg.alerts.slack}' (declared: "
                    f"{', '.join(channels.channels()) or 'none'})",
                    "declare it under slack:",
                )
            if cfg.alerts.email and not channels.has_email():
                raise ConfigError(
                    cfg.name,
                    "alerts.email",
                    "no SMTP server is declared",
                    "add email: {host: ...} to the Alerts component",
                )
        cls = DESTINATION_TYPES[res.destination_type]
        problems = cls.check_sync(sync_shape(cfg))
        if problems:
            field, problem, fix = problems[0]
            raise ConfigError(cfg.name, field, f"destination '{cfg.destination}': {problem}", fix)


def sync_shape(cfg: SyncConfig) -> SyncShape:
    return SyncShape(
        cfg.mode,
        cfg.object,
        cfg.delete_behavior,
        cfg.match.field if cfg.match else None,
        [m.to for m in cfg.mappings],
        tuple(m.kind.tag for m in cfg.mappings),
    )


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
