"""The Destinations component: named destinations in YAML -> one Dagster resource each."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
import pydantic

from retl_dagster.common.settings import PROJECT_ROOT, strict_definitions
from retl_dagster.components.env import EnvBackedResource, split_env_refs
from retl_dagster.components.pools import (
    POOL_SENSOR,
    declared_limits,
    pool_limit,
    pool_limits_sensor,
)
from retl_dagster.components.scaffold import DestinationsScaffolder
from retl_dagster.destinations import (
    Destination,
    DestinationConfigError,
    build_destination,
    secret_fields,
    verbatim_fields,
)
from retl_dagster.engine.declarations import check_destination


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower()).strip("_") or "destinations"


def resource_key(destination: str) -> str:
    return f"destination__{destination}"


class DestinationResource(EnvBackedResource):
    """A destination declared in YAML; builds its API client inside a run."""

    destination_type: str

    def client(self) -> Destination:
        """A ready API client; call inside a run."""
        return build_destination(self.name, self.destination_type, self.options())


def declared_resource(name: str, spec: Any) -> DestinationResource:
    """The resource of one destination's raw YAML, without building Dagster's definitions
    (`retl check`): options and environment references resolved as the component resolves
    them. DestinationConfigError when the declaration is wrong."""
    return _resource(_resolve_one(dg.ResolutionContext.default(), name, spec))


def _resource(d: DestinationDecl) -> DestinationResource:
    return DestinationResource(
        name=d.name,
        destination_type=d.type,
        options_json=json.dumps(d.options, sort_keys=True),
        env=d.env,
    )


class DestinationDecl(pydantic.BaseModel):
    name: str
    type: str
    options: dict[str, Any]
    env: dict[str, str]
    error: str | None = None
    """Why the declaration is invalid (outside strict mode it is kept, and its syncs show it)."""


def _resolve_destinations(
    context: dg.ResolutionContext, raw: dict[str, dict[str, Any]]
) -> list[DestinationDecl]:
    decls = []
    for name, spec in (raw or {}).items():
        try:
            decls.append(_resolve_one(context, name, spec))
        except DestinationConfigError as exc:
            # Name the line of the offending key, not the `destinations:` block's.
            tree = context.source_position_tree
            field = exc.field.split(".") if exc.field not in ("name", "type") else []
            key = [*context.path, name, *field]
            position = tree.lookup_closest_and_path(key, None)[0] if tree else None
            exc = DestinationConfigError(
                exc.destination, exc.field, exc.problem, exc.fix, _relative(position)
            )
            if strict_definitions():
                raise exc from None
            # One broken destination must not take the others (and their syncs) down.
            decls.append(DestinationDecl(name=name, type="", options={}, env={}, error=str(exc)))
    return decls


def _relative(position: Any) -> str:
    """`file:line` of a YAML position, the file relative to the project when it is in it."""
    if position is None:
        return ""
    path = Path(position.filename)
    if path.is_relative_to(PROJECT_ROOT):
        path = path.relative_to(PROJECT_ROOT)
    return f"{path}:{position.start.line}"


def _resolve_one(context: dg.ResolutionContext, name: str, spec: Any) -> DestinationDecl:
    type_ = check_destination(name, spec)
    rest = {k: v for k, v in spec.items() if k != "type"}
    options, env = split_env_refs(context, name, rest, secret_fields(type_), verbatim_fields(type_))
    pool_limit(name, type_, options)  # a bad limit is this declaration's error
    return DestinationDecl(name=name, type=type_, options=options, env=env)


@dg.scaffold_with(DestinationsScaffolder)
class Destinations(dg.Component, dg.Resolvable, dg.Model):
    """Declares the destinations syncs deliver to; each becomes resource `destination__<name>`."""

    def declared(self) -> dict[str, DestinationDecl]:
        return {d.name: d for d in self.destinations}

    destinations: Annotated[
        list[DestinationDecl],
        dg.Resolver(_resolve_destinations, model_field_type=dict[str, dict[str, Any]]),
    ]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        valid = [d for d in self.destinations if d.error is None]
        limits = declared_limits({d.name: (d.type, d.options) for d in valid})
        # One sensor per Destinations component: a project may declare its destinations in
        # several folders (defs/destinations/crm/...), each then names its own.
        folder = context.path.name
        suffix = "" if folder in ("destinations", PROJECT_ROOT.name) else f"_{_slug(folder)}"
        return dg.Definitions(
            resources={resource_key(d.name): _resource(d) for d in valid},
            sensors=[pool_limits_sensor(limits, name=f"{POOL_SENSOR}{suffix}")],
        )
