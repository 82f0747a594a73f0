"""A snapshot of the demo project's definitions (asset keys, jobs, schedules, sensors, asset
checks), so an accidental rename shows up as a diff in review. After an intended change, run
`make snapshot` (RETL_UPDATE_SNAPSHOTS=1) and commit the new file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from retl_dagster.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def describe(loaded: dg.Definitions) -> dict[str, Any]:
    graph = loaded.resolve_asset_graph()
    repo = loaded.get_repository_def()
    return {
        "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
        "asset_checks": sorted(
            f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys
        ),
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "resources": sorted((loaded.resources or {}).keys()),
        # What each of retl's assets is drawn downstream of (an inline SQL model: what it reads).
        "lineage": {
            k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
            for k in sorted(graph.get_all_asset_keys())
            if k.path[0] == "retl"
        },
        # Which steps may run side by side: warehouse writers share one pool on DuckDB; each
        # load is in its destination's pool.
        "pools": {
            k.to_user_string(): sorted(graph.get(k).pools)
            for k in sorted(graph.get_all_asset_keys())
            if graph.get(k).is_materializable
        },
    }


def test_the_demo_definitions_match_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    now = describe(defs())
    if os.environ.get("RETL_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(now, indent=2) + "\n")
    assert now == json.loads(SNAPSHOT.read_text()), (
        "the project's definitions changed; if intended, run `make snapshot` and commit "
        f"{SNAPSHOT.name}"
    )
