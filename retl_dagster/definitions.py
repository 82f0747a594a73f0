"""The code location: everything under `retl_dagster/defs/`, checked for broken references."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg

from retl_dagster.common.settings import DBT_EXECUTABLE, DBT_MANIFEST, DBT_PROJECT_DIR
from retl_dagster.components.references import check_references


def ensure_dbt_manifest() -> None:
    """`dbt parse` if the manifest is missing (a fresh clone), and on every load under
    `dagster dev` so edited models show up; it never opens the warehouse."""
    if DBT_MANIFEST.exists() and not os.environ.get("DAGSTER_IS_DEV_CLI"):
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


@dg.definitions
def defs() -> dg.Definitions:
    ensure_dbt_manifest()
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    check_references(loaded)
    return loaded
