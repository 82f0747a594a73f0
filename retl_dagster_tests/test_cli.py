"""The `retl` command on the real project: dbt models built through Dagster, the demo sync."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh data dir and DAGSTER_HOME with the dbt models built through Dagster."""
    tmp = tmp_path_factory.mktemp("project")
    env = {
        **os.environ,
        "RETL_DATA_DIR": str(tmp / "data"),
        "RETL_WAREHOUSE": str(tmp / "data" / "warehouse.duckdb"),
        "DAGSTER_HOME": str(tmp / "dagster_home"),
    }
    (tmp / "dagster_home").mkdir()
    # cwd=tmp: dagster loads a .env from its working directory over the environment.
    built = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "retl_dagster.definitions",
            "--select",
            "group:dbt_models",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return env


def test_demo_sync_from_the_command_line(project_env: dict[str, str]) -> None:
    env = project_env
    ok = run([str(BIN / "retl"), "validate"], env)
    assert ok.returncode == 0, ok.stderr
    assert "demo_users_to_file" in ok.stdout

    first = run([str(BIN / "retl"), "sync", "demo_users_to_file", "--json"], env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    con = duckdb.connect(env["RETL_WAREHOUSE"])
    active = con.execute("select count(*) from main.users").fetchall()[0][0]
    con.execute(
        "update main.users set last_name = last_name || '-renamed' where user_id in "
        "(select user_id from main.users order by user_id limit 3)"
    )
    con.close()
    assert out["status"] == "succeeded"
    assert (out["rows_queried"], out["added"], out["succeeded"], out["rejected"]) == (
        active,
        active,
        active,
        0,
    )
    assert {"run_id", "changed", "removed", "duration_s"} <= out.keys()
    outbox = Path(env["RETL_DATA_DIR"]) / "outbox" / "demo_users.jsonl"
    lines = [json.loads(x) for x in outbox.read_text().splitlines()]
    assert len(lines) == active and lines[0]["op"] == "added"
    assert {"email", "firstname", "lifetime_value"} <= lines[0]["fields"].keys()

    second = run([str(BIN / "retl"), "sync", "demo_users_to_file"], env)
    assert second.returncode == 0, second.stderr
    assert "0 added, 3 changed, 0 removed, 3 succeeded, 0 rejected" in second.stdout

    runs = json.loads(run([str(BIN / "retl"), "runs", "demo_users_to_file", "--json"], env).stdout)
    assert [r["changed"] for r in runs] == [3, 0]
    assert runs[1]["run_id"] == out["run_id"]
    # Where each run's time went, stage by stage (`retl runs` shows them too).
    assert set(runs[0]["stage_s"]) == {"query", "diff", "map", "send", "commit"}
    assert all(v >= 0 for v in runs[0]["stage_s"].values())
    table = run([str(BIN / "retl"), "runs", "demo_users_to_file"], env).stdout
    assert "stages (s)" in table and "query" in table

    status = json.loads(run([str(BIN / "retl"), "status", "--json"], env).stdout)
    by_name = {s["sync"]: s for s in status}
    assert by_name["demo_users_to_file"]["status"] == "Healthy"
    assert by_name["demo_pro_users"]["status"] == "Pending"
    assert by_name["demo_users_to_file"]["schedule"] == "manual + on model update"

    # The run is in DAGSTER_HOME, so `dagster dev` on the same home shows it.
    home_runs = Path(env["DAGSTER_HOME"]) / "history" / "runs"
    assert home_runs.exists() or (Path(env["DAGSTER_HOME"]) / "history").exists()


def test_validate_names_the_sync_field_and_fix(project_env: dict[str, str], tmp_path: Path) -> None:
    # A warehouse whose users model lacks the `plan` column the demo sync maps.
    wh = tmp_path / "broken.duckdb"
    con = duckdb.connect(str(wh))
    con.execute(f"attach '{project_env['RETL_WAREHOUSE']}' as src (read_only)")
    con.execute("create table main.users as select * exclude (plan) from src.main.users")
    con.close()
    res = run([str(BIN / "retl"), "validate"], {**project_env, "RETL_WAREHOUSE": str(wh)})
    assert res.returncode == 1
    assert (
        "sync 'demo_users_to_file', field 'mappings[4].from': column 'plan' is not in the model"
    ) in res.stderr
    assert "Fix: map an existing column or add it to the model" in res.stderr


def test_sync_of_an_unknown_name_says_which_exist(project_env: dict[str, str]) -> None:
    res = run([str(BIN / "retl"), "sync", "nope"], project_env)
    assert res.returncode == 1
    assert "no sync named 'nope'" in res.stderr and "demo_users_to_file" in res.stderr


def test_plan_and_test_row_from_the_command_line(project_env: dict[str, str]) -> None:
    env = project_env
    res = run([str(BIN / "retl"), "plan", "demo_pro_users", "--json"], env)
    assert res.returncode == 0, res.stderr
    planned = json.loads(res.stdout)
    assert planned["added"] == planned["rows_queried"] > 0
    assert planned["samples"]["added"][0]["fields"].keys() == {"email", "plan", "ltv"}
    outbox = Path(env["RETL_DATA_DIR"]) / "outbox" / "pro_users.jsonl"
    assert not outbox.exists()  # a plan sends nothing

    first_id = planned["samples"]["added"][0]["id"]
    res = run([str(BIN / "retl"), "test-row", "demo_pro_users", first_id], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "result: delivered"
    assert len(outbox.read_text().splitlines()) == 1
    # Still a plan of everything: test-row did not touch the state.
    again = json.loads(run([str(BIN / "retl"), "plan", "demo_pro_users", "--json"], env).stdout)
    assert again["added"] == planned["added"]

    missing = run([str(BIN / "retl"), "test-row", "demo_pro_users", "999999"], env)
    assert missing.returncode == 1 and "no row with user_id = '999999'" in missing.stderr


@pytest.mark.ui
def test_the_ui_shows_a_syncs_counts(project_env: dict[str, str], tmp_path: Path) -> None:
    """dagster-webserver on loopback: its GraphQL API and a headless Chromium page show the
    counts of the sync's last run."""
    env = project_env
    synced = json.loads(run([str(BIN / "retl"), "sync", "demo_pro_users", "--json"], env).stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # cwd: not the project, whose .env (a developer's DAGSTER_HOME) dagster loads over ours.
    server = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dagster-webserver did not start"
            time.sleep(1)
        query = """query ($path: [String!]!, $runs: [String!]) {
          assetOrError(assetKey: {path: $path}) {
            ... on Asset { assetMaterializations(partitions: $runs, limit: 1) { partition
              metadataEntries { label ... on IntMetadataEntry { intValue }
                                      ... on TextMetadataEntry { text } } } } } }"""
        answer = httpx.post(
            f"{url}/graphql",
            json={"query": query, "variables": {"path": ["retl", "demo_pro_users", "load"]}},
            timeout=60,
        ).json()
        mats = answer["data"]["assetOrError"]["assetMaterializations"]
        assert len(mats) == 1, answer
        [mat] = mats
        entries = {e["label"]: e.get("intValue", e.get("text")) for e in mat["metadataEntries"]}
        assert mat["partition"] == synced["run_id"]
        assert entries["succeeded"] == synced["succeeded"] > 0
        assert (entries["rows_queried"], entries["rejected"]) == (synced["rows_queried"], 0)
        assert entries["status"] == "succeeded"

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            assert not os.environ.get("CI"), "CI installs Debian's chromium for this check"
            return
        page = f"{url}/assets/retl/demo_pro_users/load?view=events"
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=20000",
            "--window-size=1400,1000",
        ]
        shot = tmp_path / "asset.png"
        subprocess.run(
            [chromium, *flags, f"--screenshot={shot}", page], timeout=120, capture_output=True
        )
        assert shot.exists() and shot.stat().st_size > 10_000
        dom = subprocess.run(
            [chromium, *flags, "--dump-dom", page], timeout=120, capture_output=True, text=True
        ).stdout
        # The run's partition is listed with its materialisation, whose counts are shown.
        assert synced["run_id"] in dom and "added_succeeded" in dom
    finally:
        server.terminate()
        server.wait(timeout=30)


LAUNCH = """
mutation ($repo: RepositorySelector!, $partitions: String!, $key: String!,
          $params: ExecutionParams!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $partitions,
                      partitionKey: $key) {
    __typename ... on PythonError { message }
  }
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


def test_a_sync_started_from_outside_dagster_over_graphql(
    project_env: dict[str, str], tmp_path: Path
) -> None:
    """What an Airflow task or a dbt Cloud webhook does (README: Starting a sync from outside):
    two GraphQL calls to a running `dagster dev` (webserver + daemon, queued runs) add the run's
    partition and launch the sync job; the daemon runs it and `_retl.sync_runs` records it."""
    from retl_dagster.cli import INSTANCE_YAML

    home = tmp_path / "home"  # its own instance: the daemon's sensors see no older events
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = {**project_env, "DAGSTER_HOME": str(home)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml")]
        + ["-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # `dagster dev` has children: stop them all
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url.replace("/graphql", "/server_info"), timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not start"
            time.sleep(1)
        loaded = ""
        while loaded != "LOADED":  # the webserver answers before the code location loaded
            assert time.monotonic() < deadline, f"code location {loaded}"
            time.sleep(1)
            entries = httpx.post(
                url,
                json={
                    "query": "{ workspaceOrError { ... on Workspace { locationEntries "
                    "{ name loadStatus } } } }"
                },
                timeout=30,
            ).json()["data"]["workspaceOrError"]["locationEntries"]
            loaded = next((e["loadStatus"] for e in entries if e["name"] == "retl_dagster"), "")
        key = "20261124T090000Z-0a1b2c"
        repo = {"repositoryLocationName": "retl_dagster", "repositoryName": "__repository__"}
        params = {
            "selector": {**repo, "pipelineName": "sync_demo_pro_users"},
            "executionMetadata": {
                "tags": [
                    {"key": "dagster/partition", "value": key},
                    {"key": "retl/trigger", "value": "airflow"},
                ]
            },
        }
        answer = httpx.post(
            url,
            json={
                "query": LAUNCH,
                "variables": {
                    "repo": repo,
                    "partitions": "retl_demo_pro_users_runs",
                    "key": key,
                    "params": params,
                },
            },
            timeout=60,
        ).json()
        data = answer["data"]
        assert data["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", answer
        assert data["launchPipelineExecution"]["__typename"] == "LaunchRunSuccess", answer
        run_id = data["launchPipelineExecution"]["run"]["runId"]
        status = ""
        while status not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline + 120, f"run {run_id} still {status}"
            time.sleep(2)
            status = httpx.post(
                url,
                json={
                    "query": "query ($id: ID!) { runOrError(runId: $id) "
                    "{ ... on Run { status } } }",
                    "variables": {"id": run_id},
                },
                timeout=30,
            ).json()["data"]["runOrError"]["status"]
        assert status == "SUCCESS"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    runs = json.loads(run([str(BIN / "retl"), "runs", "demo_pro_users", "--json"], env).stdout)
    mine = [r for r in runs if r["run_id"] == key]
    assert mine and mine[0]["status"] in ("succeeded", "partial")
    assert mine[0]["dagster_run_id"] == run_id


def test_the_demo_on_a_postgresql_warehouse(tmp_path: Path) -> None:
    """RETL_WAREHOUSE=postgresql+psycopg://...: dbt builds the models in PostgreSQL (target
    `pg`) through Dagster, and `retl sync` diffs and keeps its state there."""
    from retl_dagster_tests.harness import PG_URL, fresh_pg_database

    if not PG_URL:
        pytest.skip("no PostgreSQL: run .ci/start_postgres.sh and export RETL_TEST_PG_URL")
    with fresh_pg_database() as url:
        _demo_on(url, tmp_path)


def test_the_demo_on_a_snowflake_warehouse(tmp_path: Path) -> None:
    """RETL_WAREHOUSE=snowflake://... (fakesnow's server, through the real connector): dbt builds
    the models there (target `snowflake`), `retl validate`, `sync`, `status` and `runs` work
    on it, and the URL's password shows nowhere."""
    from retl_dagster_tests.harness import SNOWFLAKE_URL, fresh_snowflake_database

    if not SNOWFLAKE_URL:
        pytest.skip("no Snowflake: export RETL_TEST_SNOWFLAKE_URL=$(bash .ci/start_fakesnow.sh)")
    with fresh_snowflake_database() as url:
        secret_url = url.replace("retl:retl@", "retl:s3cr3t-pw@")  # fakesnow takes any password
        env = _demo_on(secret_url, tmp_path)
        status = run([str(BIN / "retl"), "status", "--json"], env)
        by_name = {s["sync"]: s for s in json.loads(status.stdout)}
        assert by_name["demo_users_to_file"]["status"] == "Healthy", status.stdout
        runs = json.loads(
            run([str(BIN / "retl"), "runs", "demo_users_to_file", "--json"], env).stdout
        )
        assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
        assert "s3cr3t-pw" not in status.stdout + status.stderr


def _demo_on(url: str, tmp_path: Path) -> dict[str, str]:
    from retl_dagster_tests.harness import sql

    env = {
        **os.environ,
        "RETL_DATA_DIR": str(tmp_path / "data"),
        "RETL_WAREHOUSE": url,
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    built = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "retl_dagster.definitions"]
        + ["--select", "group:dbt_models"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    # The URL's password is not printed (a short one like "retl" is in every module name).
    password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    printed = built.stdout + built.stderr
    assert f":{password}@" not in printed and (len(password) < 6 or password not in printed)
    valid = run([str(BIN / "retl"), "validate"], env)  # reads the model columns, read-only
    assert valid.returncode == 0 and "2 sync(s) valid" in valid.stdout, valid.stderr
    first = run([str(BIN / "retl"), "sync", "demo_users_to_file", "--json"], env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    [(active,)] = sql(url, "select count(*) from main.users")
    assert (out["rows_queried"], out["added"], out["succeeded"]) == (active, active, active)
    [(state,)] = sql(url, "select count(*) from _retl.demo_users_to_file__state")
    assert state == active
    sql(
        url,
        "update main.users set plan = 'enterprise' where user_id in (select user_id from "
        "main.users where plan <> 'enterprise' order by user_id limit 2)",
    )
    second = json.loads(
        run([str(BIN / "retl"), "sync", "demo_users_to_file", "--json"], env).stdout
    )
    assert (second["added"], second["changed"], second["removed"]) == (0, 2, 0)
    return env
