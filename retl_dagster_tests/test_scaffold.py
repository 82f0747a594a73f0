"""`dg` knows retl's components: it scaffolds a commented defs.yaml to fill in, and the JSON
schema editors complete from (docs/schema/components.schema.json) is the current one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from retl_dagster_tests.harness import defs_from_yaml

ROOT = Path(__file__).resolve().parents[1]
DG = ROOT / ".venv" / "bin" / "dg"
SCHEMA = ROOT / "docs" / "schema" / "components.schema.json"


def dg(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIRTUAL_ENV": str(ROOT / ".venv")}
    return subprocess.run(
        [str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def scratch_project(where: Path) -> Path:
    """A project with this one's `[tool.dg]` settings and an empty `retl_dagster/defs/`: `dg`
    scaffolds there as it would here, without writing into the project other tests load."""
    where.mkdir(parents=True, exist_ok=True)
    dg_settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]
    project = "".join(f"{k} = {json.dumps(v)}\n" for k, v in dg_settings["project"].items())
    (where / "pyproject.toml").write_text(
        '[project]\nname = "scratch"\nversion = "0"\n\n'
        f'[tool.dg]\ndirectory_type = "{dg_settings["directory_type"]}"\n\n'
        f"[tool.dg.project]\n{project}"
    )
    (where / "retl_dagster" / "defs").mkdir(parents=True)
    return where


@pytest.fixture
def scaffolded(tmp_path: Path) -> dict[str, Path]:
    """Each component scaffolded by `dg scaffold defs` into a folder of its own."""
    project = scratch_project(tmp_path / "project")
    folders = {
        "Sync": Path("syncs") / f"new_sync_{uuid.uuid4().hex[:6]}",
        "Destinations": Path("destinations"),
        "Alerts": Path("alerts"),
    }
    for component, folder in folders.items():
        out = dg(
            "scaffold", "defs", f"retl_dagster.components.{component}", str(folder), cwd=project
        )
        assert out.returncode == 0, out.stderr
    return {c: project / "retl_dagster" / "defs" / f / "defs.yaml" for c, f in folders.items()}


def attributes(path: Path) -> str:
    return yaml.safe_dump(yaml.safe_load(path.read_text())["attributes"])


def test_dg_scaffolds_a_commented_declaration_that_loads_once_filled_in(
    scaffolded: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    sync = scaffolded["Sync"].read_text()
    assert sync.startswith("# A Reverse ETL sync")
    assert "type: retl_dagster.components.Sync" in sync and "# schedule:" in sync
    name = scaffolded["Sync"].parent.name
    assert f"name: {name}" in sync  # named after its folder
    # As written, the three declare a working sync to a working destination.
    defs = defs_from_yaml(
        attributes(scaffolded["Destinations"]),
        attributes(scaffolded["Sync"]),
        alerts=attributes(scaffolded["Alerts"]),
    )
    assert defs.resolve_job_def(f"sync_{name}") is not None
    assert "{{ env.MY_DESTINATION_URL }}" in scaffolded["Destinations"].read_text()


def ours(schema: dict[str, Any]) -> dict[str, Any]:
    """retl's components' definitions in a components schema, with every definition they use."""
    defs = schema["$defs"]
    todo = ["Sync", "Destinations", "Alerts", "Upstreams"]
    found: dict[str, Any] = {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = defs[name]
        todo += [
            r.rsplit("/", 1)[1] for r in re.findall(r'"\$ref": "([^"]+)"', json.dumps(defs[name]))
        ]
    return found


def test_the_published_component_schema_is_current(tmp_path: Path) -> None:
    fresh = tmp_path / "schema.json"
    out = dg("utils", "generate-component-schema", "--output-path", str(fresh))
    assert out.returncode == 0, out.stderr
    # Only retl's components and what they refer to: Dagster's own, and other installed
    # integrations', follow their packages' versions.
    assert ours(json.loads(SCHEMA.read_text())) == ours(json.loads(fresh.read_text())), (
        "the components' schema changed: run `make schema` and commit it"
    )
    sync = json.loads(SCHEMA.read_text())["$defs"]["_AnyAttributes"]
    assert {"name", "model", "primary_key", "destination", "mappings"} <= set(sync["properties"])
