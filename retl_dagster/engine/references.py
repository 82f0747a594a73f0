"""Checks across declarations: a sync's destination exists, fits what its API can do, its alert
channels are declared, its sequence holds together. No Dagster: the code location, `retl
validate` and `retl status` (which reads the YAML only) share them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from retl_dagster.destinations import destination_class
from retl_dagster.destinations.base import SyncShape
from retl_dagster.engine.config import ConfigError, SyncConfig


class AlertChannelNames(Protocol):
    """What the checks need of the declared alert channels."""

    def channels(self) -> list[str]: ...

    def has_email(self) -> bool: ...


def _sequence_problems(configs: list[SyncConfig], invalid: set[str]) -> dict[str, ConfigError]:
    """`after:` names existing syncs, has no cycle, and each sequence has one first sync (a
    sequence run is the run of that sync and of the syncs after it)."""
    by_name = {c.name: c for c in configs}
    problems: dict[str, ConfigError] = {}
    for cfg in configs:
        for i, other in enumerate(cfg.after, start=1):
            if other not in by_name and other not in invalid:
                problems.setdefault(
                    cfg.name,
                    ConfigError(
                        cfg.name,
                        f"after[{i}]",
                        f"no sync named '{other}' (syncs: {', '.join(sorted(by_name))})",
                        "name a declared sync or remove it from `after`",
                    ),
                )

    def roots(name: str, path: tuple[str, ...]) -> set[str]:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError(
                name, "after", f"the sequence loops: {cycle}", "remove one `after` of the loop"
            )
        after = [a for a in by_name[name].after if a in by_name]
        if not after:
            return {name}
        return set().union(*(roots(a, (*path, name)) for a in after))

    for cfg in configs:
        try:
            first = roots(cfg.name, ())
        except ConfigError as exc:
            problems.setdefault(cfg.name, exc)
            continue
        if cfg.after and len(first) > 1:
            problems.setdefault(
                cfg.name,
                ConfigError(
                    cfg.name,
                    "after",
                    f"it follows syncs of different sequences, started by "
                    f"{', '.join(sorted(first))}",
                    "a sequence has one first sync: make the others follow it too",
                ),
            )
    return problems


def _sync_problem(
    cfg: SyncConfig,
    destinations: Mapping[str, tuple[str, str | None]],
    alerts: AlertChannelNames | None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ConfigError | None:
    """The first way `cfg` does not fit the other declarations. `destinations`: name ->
    (type, error of its declaration or None); `options`: name -> its declared options, where
    known (for checks joining them with the sync, e.g. the `http` type's templates)."""
    declared = ", ".join(sorted(destinations)) or "none"
    if cfg.destination not in destinations:
        return ConfigError(
            cfg.name,
            "destination",
            f"no destination named '{cfg.destination}' is declared (declared: {declared})",
            "declare it in a `retl_dagster.components.Destinations` defs.yaml "
            "(retl_dagster/defs/destinations/) or correct the name",
        )
    type_, error = destinations[cfg.destination]
    if error is not None:
        return ConfigError(
            cfg.name,
            "destination",
            f"destination '{cfg.destination}' is invalid: {error}",
            "fix the destination's declaration",
        )
    if cfg.alerts and (cfg.alerts.slack or cfg.alerts.email):
        if alerts is None:
            return ConfigError(
                cfg.name,
                "alerts",
                "no alert channels are declared",
                "declare a `retl_dagster.components.Alerts` defs.yaml (defs/alerts/)",
            )
        if cfg.alerts.slack and cfg.alerts.slack not in alerts.channels():
            return ConfigError(
                cfg.name,
                "alerts.slack",
                f"no Slack channel '{cfg.alerts.slack}' (declared: "
                f"{', '.join(alerts.channels()) or 'none'})",
                "declare it under slack:",
            )
        if cfg.alerts.email and not alerts.has_email():
            return ConfigError(
                cfg.name,
                "alerts.email",
                "no SMTP server is declared",
                "add email: {host: ...} to the Alerts component",
            )
    cls = destination_class(cfg.destination, type_)
    shape = sync_shape(cfg)
    problems = cls.check_sync(shape)
    if not problems and options is not None and cfg.destination in options:
        problems = cls.check_declared(options[cfg.destination], shape)
    if problems:
        field, problem, fix = problems[0]
        return ConfigError(cfg.name, field, f"destination '{cfg.destination}': {problem}", fix)
    return None


def reference_problems(
    configs: list[SyncConfig],
    destinations: Mapping[str, tuple[str, str | None]],
    alerts: AlertChannelNames | None,
    invalid: Iterable[str] = (),
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ConfigError]:
    """Each sync that does not fit the other declarations, with why: its destination, alert
    channels, what its destination's API can do, its sequence. A sync that follows an invalid
    sync (`invalid`: names found invalid on their own) is invalid too."""
    problems = _sequence_problems(configs, set(invalid))
    for cfg in configs:
        if cfg.name not in problems:
            problem = _sync_problem(cfg, destinations, alerts, options)
            if problem is not None:
                problems[cfg.name] = problem
    broken = set(invalid) | set(problems)
    changed = True
    while changed:  # a step after an invalid step cannot run either
        changed = False
        for cfg in configs:
            bad = [a for a in cfg.after if a in broken]
            if cfg.name not in broken and bad:
                problems[cfg.name] = ConfigError(
                    cfg.name,
                    "after",
                    f"it follows sync '{bad[0]}', which is invalid",
                    f"fix sync '{bad[0]}'",
                )
                broken.add(cfg.name)
                changed = True
    return problems


def sync_shape(cfg: SyncConfig) -> SyncShape:
    return SyncShape(
        cfg.mode,
        cfg.object,
        cfg.delete_behavior,
        cfg.match.field if cfg.match else None,
        [m.to for m in cfg.mappings],
        tuple(m.kind.tag for m in cfg.mappings),
        tuple(m.to for m in cfg.mappings if not m.overwrite),
    )
