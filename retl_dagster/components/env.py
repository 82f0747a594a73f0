"""Declarations whose secrets stay in the environment until a run needs them."""

from __future__ import annotations

import json
import os
from typing import Any

import dagster as dg

from retl_dagster.destinations.base import DestinationConfigError
from retl_dagster.engine import declarations


def split_env_refs(
    context: dg.ResolutionContext,
    name: str,
    spec: dict[str, Any],
    secrets: set[str],
    verbatim: set[str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(plain options, option -> environment variable) of one declaration's raw YAML.

    Called by a custom resolver, which sees the YAML before templating, so `{{ env.X }}` stays a
    reference to X (read in the run) instead of becoming the secret's value in the definitions.
    """
    return declarations.split_env_refs(
        name, spec, secrets, context.resolve_value, verbatim=verbatim or set()
    )


class EnvBackedResource(dg.ConfigurableResource):
    """Options as JSON plus the names of the environment variables holding the secret ones; the
    values are read only inside a run, so they never show in the UI, run config or logs."""

    name: str
    options_json: str = "{}"
    env: dict[str, str] = {}

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = json.loads(self.options_json)
        for option, var in self.env.items():
            value = os.environ.get(var)
            if value is None:
                raise DestinationConfigError(
                    self.name,
                    option,
                    f"environment variable {var} is not set",
                    f"export {var}=... (or put it in the project's .env)",
                )
            # A nested option (`auth.token`) goes into its object, where the declaration has one
            # (split_env_refs keeps it); flattened names (the Alerts' `slack.ops.webhook_url`)
            # stay as they are.
            *outer, last = option.split(".")
            if outer and isinstance(opts.get(outer[0]), dict):
                target = opts
                for part in outer:
                    target = target.setdefault(part, {})
                target[last] = value
            else:
                opts[option] = value
        return opts

    def redact(self, text: str) -> str:
        """`text` with the values of this declaration's environment secrets replaced by ***."""
        for var in self.env.values():
            value = os.environ.get(var)
            if value:
                text = text.replace(value, "***")
        return text
