"""The Destinations component: named destinations in YAML -> one Dagster resource each."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import dagster as dg
import pydantic

from retl_dagster.components.env import EnvBackedResource, split_env_refs
from retl_dagster.destinations import (
    Destination,
    DestinationConfigError,
    build_destination,
    destination_class,
    secret_fields,
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def resource_key(destination: str) -> str:
    return f"destination__{destination}"


class DestinationResource(EnvBackedResource):
    """A destination declared in YAML; builds its API client inside a run."""

    destination_type: str

    def client(self) -> Destination:
        """A ready API client; call inside a run."""
        return build_destination(self.name, self.destination_type, self.options())


class DestinationDecl(pydantic.BaseModel):
    name: str
    type: str
    options: dict[str, Any]
    env: dict[str, str]


def _resolve_destinations(
    context: dg.ResolutionContext, raw: dict[str, dict[str, Any]]
) -> list[DestinationDecl]:
    decls = []
    for name, spec in (raw or {}).items():
        if not _NAME_RE.match(name):
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
        destination_class(name, type_)  # unknown types fail here, at load
        rest = {k: v for k, v in spec.items() if k != "type"}
        options, env = split_env_refs(context, name, rest, secret_fields(type_))
        decls.append(DestinationDecl(name=name, type=type_, options=options, env=env))
    return decls


class Destinations(dg.Component, dg.Resolvable, dg.Model):
    """Declares the destinations syncs deliver to; each becomes resource `destination__<name>`."""

    destinations: Annotated[
        list[DestinationDecl],
        dg.Resolver(_resolve_destinations, model_field_type=dict[str, dict[str, Any]]),
    ]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(
            resources={
                resource_key(d.name): DestinationResource(
                    name=d.name,
                    destination_type=d.type,
                    options_json=json.dumps(d.options, sort_keys=True),
                    env=d.env,
                )
                for d in self.destinations
            }
        )
