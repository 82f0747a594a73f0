"""The code location: everything under `retl_dagster/defs/`, checked for broken references."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
from dagster.components.core.component_tree import ComponentTree

from retl_dagster.common.settings import (
    DBT_EXECUTABLE,
    DBT_MANIFEST,
    DBT_PROJECT_DIR,
    strict_definitions,
)
from retl_dagster.components import Alerts, Destinations, Sync
from retl_dagster.components.references import check_references
from retl_dagster.components.sync import InvalidSync
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.references import reference_problems


def _manifest_is_stale() -> bool:
    """Whether a file of the dbt project changed after dbt last wrote the manifest."""
    made = DBT_MANIFEST.stat().st_mtime
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "seeds", "snapshots"):
        sources += [p for p in (DBT_PROJECT_DIR / folder).rglob("*") if p.is_file()]
    return any(p.exists() and p.stat().st_mtime > made for p in sources)


def ensure_dbt_manifest() -> None:
    """`dbt parse` if the manifest is missing (a fresh clone), or under `dagster dev` when a
    file of the dbt project changed since (so edited models show up); not on every load: each
    run's worker loads the code location too (BENCHMARKS.md, "A run launched from the UI").
    It never opens the warehouse."""
    if DBT_MANIFEST.exists() and not (
        os.environ.get("DAGSTER_IS_DEV_CLI") and _manifest_is_stale()
    ):
        return
    subprocess.run(
        [
            DBT_EXECUTABLE,
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        check=True,
        cwd=DBT_PROJECT_DIR,
    )


def load_project(path_within_project: Path) -> dg.Definitions:
    """Every declaration under the project's `defs/`. Strict (CI, tests, `dagster definitions
    validate`): any broken declaration fails the load. Otherwise a broken sync, or one that does
    not fit the other declarations, is isolated (see common.settings.strict_definitions)."""
    tree = ComponentTree.for_project(path_within_project=path_within_project)
    strict = strict_definitions()
    components = tree.get_all_components(of_type=dg.Component)  # type: ignore[type-abstract]
    tell_destination_types(components)
    if not strict:
        isolate_broken_syncs(components)
    loaded = tree.build_defs()
    if strict:
        check_references(loaded)
    return loaded


def tell_destination_types(components: list[dg.Component]) -> None:
    """Each sync learns its destination's type (a kind of its load asset)."""
    types = {
        d.name: d.type for c in components if isinstance(c, Destinations) for d in c.destinations
    }
    for c in components:
        if isinstance(c, Sync):
            c.set_destination_type(types.get(c.destination))


def isolate_broken_syncs(components: list[dg.Component]) -> None:
    """Mark each sync that does not fit the other declarations invalid (it then builds a
    placeholder showing its error); the rest build as usual."""
    syncs = [c for c in components if isinstance(c, Sync)]
    destinations: dict[str, tuple[str, str | None]] = {}
    options: dict[str, dict[str, Any]] = {}
    for c in components:
        if isinstance(c, Destinations):
            destinations |= {d.name: (d.type, d.error) for d in c.destinations}
            options |= {d.name: d.options for d in c.destinations if d.error is None}
    alerts = next((c.resource() for c in components if isinstance(c, Alerts)), None)
    problems = reference_problems(
        [SyncConfig.model_validate(s.model_dump(by_alias=True)) for s in syncs],
        destinations,
        alerts,
        invalid=[c.name for c in components if isinstance(c, InvalidSync)],
        options=options,
    )
    for s in syncs:
        if s.name in problems:
            s.invalidate(str(problems[s.name]))


@dg.definitions
def defs() -> dg.Definitions:
    ensure_dbt_manifest()
    return load_project(Path(__file__).parent)
