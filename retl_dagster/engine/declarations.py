"""The project's declarations read straight from its `defs.yaml` files, without Dagster.

`retl status`, `retl runs` and the YAML checks of `retl validate` need the syncs, the declared
destinations and alert channels, and what is wrong with each; building Dagster's definitions for
that would cost seconds. The same checks run when Dagster loads the components (components/), so
both always agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from retl_dagster.common.settings import PROJECT_ROOT
from retl_dagster.destinations import destination_class, secret_fields, verbatim_fields
from retl_dagster.destinations.base import DestinationConfigError
from retl_dagster.engine.config import ConfigError, SyncConfig, explain
from retl_dagster.engine.references import reference_problems

SYNC_TYPE = "retl_dagster.components.Sync"
DESTINATIONS_TYPE = "retl_dagster.components.Destinations"
ALERTS_TYPE = "retl_dagster.components.Alerts"
DEFS_DIR = PROJECT_ROOT / "retl_dagster" / "defs"

# A whole value that is just `{{ env.NAME }}` or `{{ env('NAME') }}`.
_ENV_REF = re.compile(r"^\s*\{\{\s*env(?:\.(\w+)|\(\s*['\"](\w+)['\"]\s*\))\s*\}\}\s*$")
_DESTINATION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def env_ref(value: Any) -> str | None:
    """The variable a value that is exactly `{{ env.NAME }}` refers to."""
    m = _ENV_REF.match(value) if isinstance(value, str) else None
    return (m.group(1) or m.group(2)) if m else None


def split_env_refs(
    name: str,
    spec: dict[str, Any],
    secrets: set[str],
    resolve: Callable[[Any], Any] = lambda value: value,
    verbatim: Collection[str] = (),
    prefix: str = "",
) -> tuple[dict[str, Any], dict[str, str]]:
    """(plain options, option -> environment variable) of one declaration: a value that is
    exactly `{{ env.X }}` stays a reference to X, read only inside a run; a secret option written
    literally is refused. `resolve` renders the other values (Dagster's templating), except the
    `verbatim` ones (a destination's own templates). A nested model holding secrets (`auth:
    {token: ...}`) is split the same way, its references named by dotted paths (`auth.token`)."""
    options: dict[str, Any] = {}
    env: dict[str, str] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        var = env_ref(value)
        if var:
            env[path] = var
        elif path in verbatim:
            options[key] = value
        elif path in secrets and value is not None:
            hint = path.replace(".", ": {", path.count(".")) + "}" * path.count(".")
            raise DestinationConfigError(
                name,
                path,
                "a secret is written into the YAML",
                f"read it from the environment: {hint}: "
                f'"{{{{ env.{name.upper()}_{path.replace(".", "_").upper()} }}}}"',
            )
        elif isinstance(value, dict) and any(s.startswith(f"{path}.") for s in secrets):
            inner, inner_env = split_env_refs(name, value, secrets, resolve, verbatim, f"{path}.")
            options[key] = inner
            env |= inner_env
        else:
            options[key] = resolve(value)
    return options, env


def check_destination(name: str, spec: Any) -> str:
    """The type of one declared destination; DestinationConfigError when it is wrong."""
    if not _DESTINATION_NAME.match(name):
        raise DestinationConfigError(
            name,
            "name",
            "must be lower-case letters, digits and underscores",
            "rename the destination, e.g. crm_hook",
        )
    if not isinstance(spec, dict) or "type" not in spec:
        raise DestinationConfigError(
            name, "type", "missing", "give each destination a type, e.g. `type: webhook`"
        )
    type_ = str(spec["type"])
    cls = destination_class(name, type_)  # an unknown type is refused here
    for field_, problem, fix in cls.check_options({k: v for k, v in spec.items() if k != "type"}):
        raise DestinationConfigError(name, field_, problem, fix)
    return type_


@dataclass
class AlertNames:
    """The declared alert channels (for the reference checks)."""

    slack: list[str]
    email: bool

    def channels(self) -> list[str]:
        return sorted(self.slack)

    def has_email(self) -> bool:
        return self.email


@dataclass
class Declarations:
    syncs: dict[str, SyncConfig] = field(default_factory=dict)
    """The syncs whose YAML is valid, by name."""
    invalid: dict[str, str] = field(default_factory=dict)
    """Syncs whose YAML is not, with every error (one per line)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Sync name -> its defs.yaml, relative to the project."""
    destinations: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Destination name -> (type, the error of its declaration or None)."""
    destination_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Destination name -> its YAML as written (`type` and options, env references unresolved),
    for building its client without Dagster's definitions (`retl check`)."""
    alerts: AlertNames | None = None
    errors: list[str] = field(default_factory=list)
    """Files that are not YAML at all."""

    def problems(self) -> dict[str, str]:
        """Every sync that cannot run, with why: its own YAML, or how it fits the others."""
        out = dict(self.invalid)
        options = {
            n: {k: v for k, v in spec.items() if k != "type"}
            for n, spec in self.destination_specs.items()
        }
        refs = reference_problems(
            list(self.syncs.values()),
            self.destinations,
            self.alerts,
            invalid=self.invalid,
            options=options,
        )
        out |= {name: str(err) for name, err in refs.items()}
        return out


def _render_env(value: Any) -> Any:
    """`{{ env.X }}` in a sync's YAML, rendered as Dagster would (from the environment)."""
    if isinstance(value, dict):
        return {k: _render_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_env(v) for v in value]
    var = env_ref(value)
    return os.environ.get(var, value) if var else value


def read_declarations(defs_dir: Path | None = None) -> Declarations:
    """Every Sync, Destinations and Alerts declaration under `defs_dir` (the project's), checked."""
    defs_dir = defs_dir or DEFS_DIR
    out = Declarations()
    root = defs_dir.parents[1] if len(defs_dir.parents) > 1 else defs_dir
    for path in sorted(defs_dir.rglob("defs.yaml")):
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            out.errors.append(f"{rel}: not valid YAML: {exc}")
            continue
        for doc in docs:
            attrs = doc.get("attributes") or {}
            if doc.get("type") == SYNC_TYPE:
                name = attrs.get("name") if isinstance(attrs.get("name"), str) else None
                name = name or path.parent.name
                out.sources[name] = rel
                try:
                    out.syncs[name] = SyncConfig.model_validate(_render_env(attrs))
                except pydantic.ValidationError as exc:
                    out.invalid[name] = "\n".join(explain(exc, name, rel))
                except ConfigError as exc:
                    out.invalid[name] = str(exc)
            elif doc.get("type") == DESTINATIONS_TYPE:
                for name, spec in (attrs.get("destinations") or {}).items():
                    if isinstance(spec, dict):
                        out.destination_specs[name] = spec
                    try:
                        type_ = check_destination(name, spec)
                        rest = {k: v for k, v in spec.items() if k != "type"}
                        split_env_refs(
                            name, rest, secret_fields(type_), verbatim=verbatim_fields(type_)
                        )
                        out.destinations[name] = (type_, None)
                    except DestinationConfigError as exc:
                        out.destinations[name] = ("", str(exc))
            elif doc.get("type") == ALERTS_TYPE:
                out.alerts = AlertNames(
                    slack=list((attrs.get("slack") or {}).keys()), email=bool(attrs.get("email"))
                )
    return out
