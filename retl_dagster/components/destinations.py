"""The Destinations component: named destinations in YAML -> one Dagster resource each."""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any

import dagster as dg
import pydantic

from retl_dagster.destinations import (
    Destination,
    DestinationConfigError,
    build_destination,
    destination_class,
    secret_fields,
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A whole value that is just `{{ env.NAME }}` or `{{ env('NAME') }}`.
_ENV_REF = re.compile(r"^\s*\{\{\s*env(?:\.(\w+)|\(\s*['\"](\w+)['\"]\s*\))\s*\}\}\s*$")


def resource_key(destination: str) -> str:
    return f"destination__{destination}"


class DestinationResource(dg.ConfigurableResource):
    """A destination declared in YAML. Secrets are held as environment variable *names* and read
    only inside a run, so they never show in the UI, run config or logs."""

    destination_name: str
    destination_type: str
    options_json: str = "{}"
    """Non-secret options, as JSON."""
    env: dict[str, str] = {}
    """Option name -> environment variable that holds its value."""

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = json.loads(self.options_json)
        for option, var in self.env.items():
            value = os.environ.get(var)
            if value is None:
                raise DestinationConfigError(
                    self.destination_name,
                    option,
                    f"environment variable {var} is not set",
                    f"export {var}=... (or put it in the project's .env)",
                )
            opts[option] = value
        return opts

    def redact(self, text: str) -> str:
        """`text` with the values of this destination's environment secrets replaced by ***."""
        for var in self.env.values():
            value = os.environ.get(var)
            if value:
                text = text.replace(value, "***")
        return text

    def client(self) -> Destination:
        """A ready API client; call inside a run."""
        return build_destination(self.destination_name, self.destination_type, self.options())


class DestinationDecl(pydantic.BaseModel):
    name: str
    type: str
    options: dict[str, Any]
    env: dict[str, str]


def _resolve_destinations(
    context: dg.ResolutionContext, raw: dict[str, dict[str, Any]]
) -> list[DestinationDecl]:
    # A custom resolver sees the YAML before templating, so `{{ env.X }}` can stay a reference
    # to X (resolved in the run) instead of becoming the secret's value in the definitions.
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
        secrets = secret_fields(type_)
        options: dict[str, Any] = {}
        env: dict[str, str] = {}
        for key, value in spec.items():
            if key == "type":
                continue
            m = _ENV_REF.match(value) if isinstance(value, str) else None
            if m:
                env[key] = m.group(1) or m.group(2)
            elif key in secrets and value is not None:
                raise DestinationConfigError(
                    name,
                    key,
                    "a secret is written into the YAML",
                    f"read it from the environment: {key}: "
                    f'"{{{{ env.{name.upper()}_{key.upper()} }}}}"',
                )
            else:
                options[key] = context.resolve_value(value)
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
                    destination_name=d.name,
                    destination_type=d.type,
                    options_json=json.dumps(d.options, sort_keys=True),
                    env=d.env,
                )
                for d in self.destinations
            }
        )
