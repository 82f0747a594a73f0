"""One broken declaration never stops the others: outside strict loading the healthy syncs load,
run and schedule, and each broken one is a visible placeholder carrying its error; strict loading
(CI, `dagster definitions validate`, the tests) still fails on it."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.sync import INVALID_METADATA_KEY, load_key
from retl_dagster.definitions import load_project
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import dagster_validate, sql

FILES = {
    "pyproject.toml": """
        [tool.dg]
        directory_type = "project"
        [tool.dg.project]
        root_module = "teamproj"
        """,
    "teamproj/__init__.py": "",
    "teamproj/defs/__init__.py": "",
    "teamproj/defs/destinations/defs.yaml": """
        type: retl_dagster.components.Destinations
        attributes:
          destinations:
            out: {type: file, path: "{out}"}
            leaky: {type: webhook, url: "http://127.0.0.1:9", secret: hunter2}
        """,
    "teamproj/defs/syncs/healthy/defs.yaml": """
        type: retl_dagster.components.Sync
        attributes:
          name: healthy
          model: {table: people}
          primary_key: id
          destination: out
          mappings: [{from: email, to: email}]
          schedule: {interval: 1h}
        """,
    "teamproj/defs/syncs/typo/defs.yaml": """
        type: retl_dagster.components.Sync
        attributes:
          name: typo
          model: {table: people}
          primery_key: id
          destination: out
          mappings: [{from: email, to: email}]
        """,
    "teamproj/defs/syncs/leaks/defs.yaml": """
        type: retl_dagster.components.Sync
        attributes:
          name: leaks
          model: {table: people}
          primary_key: id
          destination: leaky
          mappings: [{from: email, to: email}]
        """,
    "teamproj/defs/syncs/badname/defs.yaml": """
        type: retl_dagster.components.Sync
        attributes:
          name: Bad Name
          model: {table: people}
          primary_key: id
          destination: out
          mappings: [{from: email, to: email}]
        """,
    "teamproj/defs/syncs/follower/defs.yaml": """
        type: retl_dagster.components.Sync
        attributes:
          name: follower
          model: {table: people}
          primary_key: id
          destination: out
          mappings: [{from: email, to: email}]
          after: [typo]
        """,
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "team"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("{out}", str(tmp_path / "out.jsonl")))
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.startswith("teamproj")]:
        del sys.modules[name]
    return root


def messages(exc: BaseException) -> str:
    """The exception and its causes (Dagster wraps a component's error in the tree's)."""
    out: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        out.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return "\n".join(out)


def invalid(defs: dg.Definitions) -> dict[str, str]:
    out = {}
    for spec in defs.resolve_all_asset_specs():
        if INVALID_METADATA_KEY in spec.metadata:
            out[spec.key.path[1]] = str(spec.metadata[INVALID_METADATA_KEY])
    return out


def test_broken_syncs_are_isolated_and_shown(
    project: Path,
    tmp_path: Path,
    warehouse_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETL_STRICT", "0")
    defs = load_project(project / "teamproj")
    dg.Definitions.validate_loadable(defs)
    errors = invalid(defs)
    assert set(errors) == {"typo", "leaks", "follower", "bad_name"}
    assert "sync name 'Bad Name' is not lower-case" in errors["bad_name"]
    assert "field 'primery_key': unknown key 'primery_key'" in errors["typo"]
    assert "rename it to `primary_key`" in errors["typo"]
    assert "teamproj/defs/syncs/typo/defs.yaml" in errors["typo"]
    assert "destination 'leaky' is invalid" in errors["leaks"]
    assert "a secret is written into the YAML" in errors["leaks"]
    assert "defs/destinations/defs.yaml:6)" in errors["leaks"]  # the line of `leaky`'s secret
    assert "hunter2" not in errors["leaks"]
    assert "it follows sync 'typo', which is invalid" in errors["follower"]
    # The healthy sync keeps its job and schedule, and runs.
    assert defs.resolve_job_def("sync_healthy")
    assert [s.name for s in defs.schedules or []] == ["retl_healthy_schedule"]
    sql(
        warehouse_path,
        "create table people as select i as id, 'p' || i as email "
        "from generate_series(1, 5) as t(i)",
    )
    outcome = run_sync(defs, "healthy", instance)
    assert outcome.status == "succeeded" and outcome.summary["added"] == 5
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == load_key("typo"))
    assert spec.description and spec.description.startswith("INVALID: sync typo")


def test_strict_loading_still_fails_on_a_broken_sync(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETL_STRICT", "1")
    shutil.rmtree(project / "teamproj/defs/syncs/badname")  # one broken sync at a time below
    with pytest.raises(Exception) as exc:
        load_project(project / "teamproj")
    assert "destination 'leaky', field 'secret': a secret is written" in messages(exc.value)
    (project / "teamproj/defs/destinations/defs.yaml").write_text(
        (project / "teamproj/defs/destinations/defs.yaml")
        .read_text()
        .replace("secret: hunter2", "secret: '{{ env.LEAKY_SECRET }}'")
    )
    with pytest.raises(Exception) as exc:
        load_project(project / "teamproj")
    assert "field 'primery_key': unknown key 'primery_key'" in messages(exc.value)


def test_dagster_definitions_validate_fails_on_a_broken_sync(project: Path) -> None:
    shutil.rmtree(project / "teamproj/defs/syncs/badname")
    dests = project / "teamproj/defs/destinations/defs.yaml"
    dests.write_text(dests.read_text().replace("secret: hunter2", "secret: '{{ env.X }}'"))
    done = dagster_validate(
        """
        from pathlib import Path
        from retl_dagster.definitions import load_project
        defs = load_project(Path(__file__).parent / 'teamproj')
        """,
        project / "team_defs.py",
    )
    assert done.returncode != 0
    assert "unknown key 'primery_key'" in done.stdout + done.stderr


def test_retl_status_and_validate_name_the_broken_syncs(
    project: Path, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from retl_dagster import cli
    from retl_dagster.engine import declarations

    monkeypatch.setattr(declarations, "DEFS_DIR", project / "teamproj" / "defs")
    runner = CliRunner()
    out = runner.invoke(cli.main, ["status", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["sync"]: r for r in json.loads(out.output)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "Bad Name": "Invalid",
        "follower": "Invalid",
        "healthy": "Pending",
        "leaks": "Invalid",
        "typo": "Invalid",
    }
    assert "rename it to `primary_key`" in rows["typo"]["error"]
    # Full width in a pipe: the table is not cut at 80 columns.
    table = runner.invoke(cli.main, ["status"]).output
    assert "typo is invalid: sync 'typo'" in table and max(map(len, table.splitlines())) > 80
    # validate lists every problem, short, no traceback, and fails.
    checked = runner.invoke(cli.main, ["validate", "--no-warehouse"])
    assert checked.exit_code == 1
    assert "unknown key 'primery_key'" in checked.output
    assert "destination 'leaky', field 'secret': a secret is written" in checked.output
    assert "it follows sync 'typo', which is invalid" in checked.output
    assert "Traceback" not in checked.output
    # A run of the broken sync is refused in a few lines; the healthy one is not.
    refused = runner.invoke(cli.main, ["sync", "typo"])
    assert refused.exit_code == 1 and "sync typo is invalid and cannot run" in refused.output
    assert len(refused.output.splitlines()) <= 4
