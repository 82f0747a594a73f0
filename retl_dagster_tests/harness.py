"""Build definitions from YAML text the way a project's defs.yaml files are loaded."""

from __future__ import annotations

import textwrap

import dagster as dg
from dagster.components.core.component_tree import ComponentTree

from retl_dagster.components import Alerts, Destinations, Sync
from retl_dagster.components.references import check_references


def defs_from_yaml(destinations: str, *syncs: str, alerts: str | None = None) -> dg.Definitions:
    """`attributes:` bodies of a Destinations component, of Sync components and (optionally)
    of an Alerts component."""
    context = ComponentTree.for_test().load_context
    parts = [Destinations.resolve_from_yaml(textwrap.dedent(destinations)).build_defs(context)]
    if alerts is not None:
        parts.append(Alerts.resolve_from_yaml(textwrap.dedent(alerts)).build_defs(context))
    parts += [Sync.resolve_from_yaml(textwrap.dedent(s)).build_defs(context) for s in syncs]
    defs = dg.Definitions.merge(*parts)
    check_references(defs)
    return defs


WEBHOOK_DESTINATION = """
destinations:
  hook:
    type: webhook
    url: "{{ env.TEST_HOOK_URL }}"
    secret: "{{ env.TEST_HOOK_SECRET }}"
    batch_size: 50
    backoff_initial_s: 0.01
    backoff_max_s: 0.2
"""
