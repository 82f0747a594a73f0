"""A production deployment on one machine, every piece its own process: a code server
(`dagster code-server start`, as deploy/Dockerfile runs it), `dagster-webserver` and
`dagster-daemon run` reaching it over gRPC by host and port (as deploy/workspace.yaml does), on
the instance of deploy/dagster.yaml with Dagster's storage and the warehouse in PostgreSQL.

Three syncs launched at once over GraphQL run side by side and deliver every row once; a run
whose worker is killed mid-load is reported failed, and the next run of the sync sends the rest
without losing a row."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from retl_dagster_tests.conftest import WEBHOOK_SECRET
from retl_dagster_tests.fakes.webhook_receiver import Received, WebhookReceiver
from retl_dagster_tests.harness import PG_URL, fresh_pg_database, sql
from retl_dagster_tests.test_cli import BIN, LAUNCH

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
LOCATION = "retl_prod"
REPO = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
SYNCS = ("a", "b", "c")
ROWS = 1200
BATCH = 20
DELAY_S = 0.1
"""Each receiver answers a batch after this long: a load of ROWS takes ~7 s, longer than the
spread of the three runs' starts (the daemon launches queued runs one after another, each
waiting for its worker to start: ~2 s apart), so loads that may run together do overlap."""
KILL_ROWS = 600
KILL_DELAY_S = 0.15


def hold_first_request(barrier: threading.Barrier) -> Callable[[dict[str, Any]], None]:
    """A receiver's `before_answer` that waits at `barrier` on its first request only."""
    seen = threading.Event()

    def hold(body: dict[str, Any]) -> None:
        if seen.is_set():
            return
        seen.set()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    return hold


@dataclass
class TimedReceiver(WebhookReceiver):
    """The webhook fake, remembering when each request was answered."""

    answered_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        # A killed run worker drops its connection mid-request: expected here, not a traceback.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def _log(
        self,
        h: dict[str, str],
        body: dict[str, Any],
        status: int,
        answer: Any,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        self.answered_at.append(time.time())
        return super()._log(h, body, status, answer, extra)

    def window(self) -> tuple[float, float]:
        """From the first request's arrival to the last one's answer."""
        return min(self.answered_at) - self.delay_s, max(self.answered_at)

    def ids(self, requests: list[Received] | None = None) -> list[str]:
        """Ids of the records in 2xx-answered batches, in arrival order, repeats kept."""
        reqs = self.requests if requests is None else requests
        return [r["id"] for req in reqs if req.status == 200 for r in req.body["records"]]


def project_files(root: Path) -> None:
    """A retl project of three webhook syncs, each to its own receiver; loaded by the code
    server the way retl_dagster/definitions.py loads this repository's."""
    destinations = "\n".join(
        f"""    hook_{s}:
      type: webhook
      url: "{{{{ env.HOOK_{s.upper()}_URL }}}}"
      secret: "{{{{ env.TEST_HOOK_SECRET }}}}"
      batch_size: {BATCH}
      concurrency: 1"""
        for s in SYNCS
    )
    files = {
        "pyproject.toml": """
            [tool.dg]
            directory_type = "project"
            [tool.dg.project]
            root_module = "prodproj"
            """,
        "prodproj/__init__.py": "",
        "prodproj/definitions.py": """
            from pathlib import Path

            import dagster as dg

            from retl_dagster.definitions import load_project


            @dg.definitions
            def defs() -> dg.Definitions:
                return load_project(Path(__file__).parent)
            """,
        "prodproj/defs/__init__.py": "",
        "prodproj/defs/destinations/defs.yaml": "type: retl_dagster.components.Destinations\n"
        "attributes:\n  destinations:\n" + destinations + "\n",
    }
    for s in SYNCS:
        files[f"prodproj/defs/syncs/to_{s}/defs.yaml"] = f"""
            type: retl_dagster.components.Sync
            attributes:
              name: to_{s}
              model: {{table: people_{s}}}
              primary_key: id
              destination: hook_{s}
              mode: upsert
              mappings:
                - {{from: email, to: email}}
            """
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """A server in its own process group, stopped with its children at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


RELOAD = """mutation ($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name)
{ __typename } }"""


class Deployment:
    """The GraphQL API of the running webserver."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url, self.logs = url, logs

    def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.post(
            self.url, json={"query": query, "variables": variables or {}}, timeout=60
        ).json()
        assert "errors" not in answer, answer
        return answer["data"]

    def wait_loaded(self, deadline: float) -> None:
        """Until the webserver has the code location. It asks the code server once at start,
        maybe before the server listens: then ask it to load the location again."""
        problem: Any = "not listed"
        while problem is not None:
            assert time.monotonic() < deadline, f"code location: {problem}; {self.tail()}"
            time.sleep(0.5)
            try:
                entries = self.post(
                    "{ workspaceOrError { ... on Workspace { locationEntries "
                    "{ name loadStatus locationOrLoadError { __typename "
                    "... on PythonError { message } } } } } }"
                )["workspaceOrError"]["locationEntries"]
            except httpx.TransportError:
                continue
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            if entry is None or entry["loadStatus"] != "LOADED":
                problem = entry
            elif entry["locationOrLoadError"]["__typename"] != "RepositoryLocation":
                problem = entry["locationOrLoadError"]
                self.post(RELOAD, {"name": LOCATION})
            else:
                problem = None

    def launch(self, sync: str, key: str) -> str:
        params = {
            "selector": {**REPO, "pipelineName": f"sync_{sync}"},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]},
        }
        data = self.post(
            LAUNCH,
            {"repo": REPO, "partitions": f"retl_{sync}_runs", "key": key, "params": params},
        )
        assert data["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", data
        assert data["launchPipelineExecution"]["__typename"] == "LaunchRunSuccess", data
        return str(data["launchPipelineExecution"]["run"]["runId"])

    def status(self, run_id: str) -> str:
        run = self.post(
            "query ($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]
        return str(run["status"])

    def wait_done(self, run_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        status = self.status(run_id)
        while status not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline, f"run {run_id} still {status}; {self.tail()}"
            time.sleep(0.5)
            status = self.status(run_id)
        return status

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The pid of the process running the run (its `Started process for run` event)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event and event.message and event.message.startswith("Started process for run"):
            pid = event.engine_event_data.metadata["pid"].value
            return int(str(pid))
    raise AssertionError(f"run {run_id}: no run worker started")


def count(url: str, query: str) -> int:
    [(n,)] = sql(url, query)
    return int(n)


@pytest.mark.ui
@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL: export RETL_TEST_PG_URL")
def test_syncs_overlap_and_a_killed_worker_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project_files(project)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    grpc_port, web_port = free_port(), free_port()
    (tmp_path / "workspace.yaml").write_text(
        (DEPLOY / "workspace.yaml")
        .read_text()
        .replace("host: code_server", "host: 127.0.0.1")
        .replace("port: 4000", f"port: {grpc_port}")
        .replace("location_name: retl_dagster", f"location_name: {LOCATION}")
    )
    with ExitStack() as stack:
        dagster_db = stack.enter_context(fresh_pg_database())
        warehouse = stack.enter_context(fresh_pg_database())
        receivers = {s: TimedReceiver(secret=WEBHOOK_SECRET, delay_s=DELAY_S) for s in SYNCS}
        for r in receivers.values():
            stack.enter_context(r)
        for s in SYNCS:
            sql(
                warehouse,
                f"create table people_{s} as select i as id, '{s}' || i || '@example.com' "
                f"as email from generate_series(1, {ROWS}) as t(i)",
            )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": "postgresql+psycopg2://" + dagster_db.split("://", 1)[1],
            "RETL_WAREHOUSE": warehouse,
            "RETL_DATA_DIR": str(tmp_path / "data"),
            "TEST_HOOK_SECRET": WEBHOOK_SECRET,
            **{f"HOOK_{s.upper()}_URL": r.url for s, r in receivers.items()},
        }
        for key in ("DAGSTER_HOME", "DAGSTER_PG_URL"):
            monkeypatch.setenv(key, env[key])
        # Dagster's storage is created once, before the services: started together on a fresh
        # database, the webserver and the daemon may both create it, and one dies ("type
        # event_logs already exists"; compose restarts it, this test would not).
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
        started, t0 = time.monotonic(), time.time()
        # cwd: not the repository, whose .env (a developer's DAGSTER_HOME) dagster would load.
        stack.enter_context(
            process(
                [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1"]
                + ["-p", str(grpc_port), "-m", "prodproj.definitions"]
                + ["--working-directory", str(project), "--location-name", LOCATION],
                tmp_path,
                env,
                logs / "code_server.log",
            )
        )
        workspace = str(tmp_path / "workspace.yaml")
        stack.enter_context(
            process(
                [str(BIN / "dagster-webserver"), "-w", workspace]
                + ["-h", "127.0.0.1", "-p", str(web_port)],
                tmp_path,
                env,
                logs / "webserver.log",
            )
        )
        stack.enter_context(
            process(
                [str(BIN / "dagster-daemon"), "run", "-w", workspace],
                tmp_path,
                env,
                logs / "daemon.log",
            )
        )
        ui = Deployment(f"http://127.0.0.1:{web_port}/graphql", logs)
        ui.wait_loaded(started + 120)
        instance = stack.enter_context(dg.DagsterInstance.get())
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

        # Three syncs at once: the daemon dequeues them (one queued run per sync at most), they
        # load side by side, and every receiver gets every row of its model exactly once.
        # Each receiver holds its first request until all three loads have sent one (at most
        # 25 s, inside the client's 30 s timeout): loads allowed to run side by side then
        # overlap however slowly the daemon starts their workers; loads run one after another
        # do not.
        all_started = threading.Barrier(len(SYNCS), timeout=25)
        for r in receivers.values():
            r.before_answer = hold_first_request(all_started)
        runs = {s: ui.launch(f"to_{s}", f"20261129T100000Z-first{s}") for s in SYNCS}
        statuses = {s: ui.wait_done(run_id, 90) for s, run_id in runs.items()}
        assert statuses == dict.fromkeys(SYNCS, "SUCCESS"), ui.tail()
        for s, r in receivers.items():
            ids = r.ids()
            assert len(ids) == ROWS and set(ids) == {str(i) for i in range(1, ROWS + 1)}, s
            assert r.signature_failures == 0
            assert count(warehouse, f"select count(*) from _retl.to_{s}__state") == ROWS
        windows = {s: r.window() for s, r in receivers.items()}
        spans = {s: f"{w[0] - t0:.1f}-{w[1] - t0:.1f}s" for s, w in windows.items()}
        together = min(w[1] for w in windows.values()) - max(w[0] for w in windows.values())
        assert together > 0, f"the three loads did not overlap: {spans}"
        for r in receivers.values():
            r.before_answer = None

        # A run whose worker dies mid-load is reported failed (with Dagster's default launcher
        # the code server notices its child died; README: Running in production), and the next
        # run of the sync sends the rest and loses nothing.
        hook = receivers["a"]
        hook.delay_s = KILL_DELAY_S
        sql(
            warehouse,
            "insert into people_a select i, 'a' || i || '@example.com' from "
            f"generate_series({ROWS + 1}, {ROWS + KILL_ROWS}) as t(i)",
        )
        before = len(hook.requests)
        doomed = ui.launch("to_a", "20261129T101000Z-killed")
        deadline = time.monotonic() + 60
        # Kill once some batches are acknowledged and committed to the state, long before all.
        while count(warehouse, "select count(*) from _retl.to_a__state") < ROWS + 5 * BATCH:
            assert time.monotonic() < deadline, f"run {doomed} sent nothing; {ui.tail()}"
            assert ui.status(doomed) in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
            time.sleep(0.05)
        os.kill(run_worker_pid(instance, doomed), signal.SIGKILL)
        killed_at = time.monotonic()
        sent_by_doomed = hook.ids(hook.requests[before:])
        assert len(sent_by_doomed) < KILL_ROWS  # killed mid-load
        assert ui.wait_done(doomed, 60) == "FAILURE"
        detected_s = time.monotonic() - killed_at
        sent_by_doomed = hook.ids(hook.requests[before:])  # also whatever was in flight
        committed = count(warehouse, "select count(*) from _retl.to_a__state") - ROWS

        after = len(hook.requests)
        hook.delay_s = DELAY_S
        resumed = ui.launch("to_a", "20261129T102000Z-resume")
        assert ui.wait_done(resumed, 90) == "SUCCESS", ui.tail()
        sent_by_resumed = hook.ids(hook.requests[after:])

        everyone = {str(i) for i in range(1, ROWS + KILL_ROWS + 1)}
        assert set(hook.store) == everyone  # nothing lost at the destination
        assert count(warehouse, "select count(*) from _retl.to_a__state") == ROWS + KILL_ROWS
        # The next run resumed: what the killed run had committed was not sent again; only
        # what it had not (batches acknowledged in its last moments, or in flight) was.
        assert len(sent_by_resumed) == KILL_ROWS - committed
        assert set(sent_by_doomed) | set(sent_by_resumed) == everyone - {
            str(i) for i in range(1, ROWS + 1)
        }
        resent = set(sent_by_doomed) & set(sent_by_resumed)
        assert len(resent) <= 5 * BATCH
        # `retl runs` shows the killed run Incomplete (marked by the run that resumed it), not
        # In Progress forever.
        statuses = dict(
            sql(warehouse, "select run_id, status from _retl.sync_runs where sync = 'to_a'")
        )
        assert statuses["20261129T101000Z-killed"] == "incomplete"
        assert statuses["20261129T102000Z-resume"] == "succeeded"
        print(
            f"load windows {spans}; worker killed after {len(sent_by_doomed)} records "
            f"({committed} committed), FAILURE after {detected_s:.1f}s, {len(resent)} resent; "
            f"total {time.monotonic() - started:.1f}s"
        )


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_the_compose_instance_is_the_deploy_instance_with_dockers_launcher() -> None:
    """deploy/dagster.docker.yaml differs from the tested deploy/dagster.yaml only by its run
    launcher, whose run containers join the compose network and get the storage and warehouse
    URLs."""
    docker, deploy = load("dagster.docker.yaml"), load("dagster.yaml")
    launcher = docker.pop("run_launcher")
    assert docker == deploy
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert {"DAGSTER_PG_URL", "RETL_WAREHOUSE", "RETL_RATE_LIMITS"} <= set(
        launcher["config"]["env_vars"]
    )
    compose = load("docker-compose.yaml")
    assert launcher["config"]["network"] in {n["name"] for n in compose["networks"].values()}


def test_compose_runs_the_four_services_without_a_secret_in_the_file() -> None:
    compose = load("docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "code_server", "webserver", "daemon"}
    [grpc] = load("workspace.yaml")["load_from"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert grpc["grpc_server"]["host"] in services
    assert f"EXPOSE {grpc['grpc_server']['port']}" in dockerfile
    assert '"-m", "retl_dagster.definitions"' in dockerfile
    assert services["daemon"]["entrypoint"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["entrypoint"][0] == "dagster-webserver"
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "URL")):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
        assert name == "postgres" or service.get("env_file") == ".env"
    example = (DEPLOY / ".env.example").read_text()
    assert "DAGSTER_PG_URL=postgresql+psycopg2://" in example  # Dagster's storage: psycopg2


def test_the_helm_values_carry_retls_instance() -> None:
    """The chart's instance (deploy/helm/values.yaml) has deploy/dagster.yaml's limits, queue
    and run monitoring, the Kubernetes run launcher, and the code location of the image."""
    values, deploy = load("helm/values.yaml"), load("dagster.yaml")
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["pools"]["defaultLimit"] == deploy["concurrency"]["pools"]["default_limit"]
    limits = deploy["concurrency"]["runs"]["tag_concurrency_limits"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == limits
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["dequeueIntervalSeconds"] == deploy["run_queue"]["dequeue_interval_seconds"]
    monitoring, want = daemon["runMonitoring"], deploy["run_monitoring"]
    assert (monitoring["enabled"], monitoring["startTimeoutSeconds"]) == (
        want["enabled"],
        want["start_timeout_seconds"],
    )
    assert monitoring["pollIntervalSeconds"] == want["poll_interval_seconds"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False  # no password in the values
    [code] = values["dagster-user-deployments"]["deployments"]
    assert code["codeServerArgs"] == ["-m", "retl_dagster.definitions"]
    assert f"EXPOSE {code['port']}" in (DEPLOY / "Dockerfile").read_text()


def test_the_image_pins_fit_the_project() -> None:
    """deploy/constraints.txt pins every runtime dependency, within pyproject.toml's ranges,
    and the run launchers at the release of the pinned dagster."""
    pins: dict[str, str] = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = Path(__file__).resolve().parents[1] / "pyproject.toml"
    for dep in tomllib.loads(project.read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        assert canonicalize_name(req.name) in pins, f"{req.name} is not pinned"
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), dep
    _, minor, patch = pins["dagster"].split(".")
    release = f"0.{int(minor) + 16}.{patch}"  # dagster 1.13.27's libraries are 0.29.27
    for library in ("dagster-postgres", "dagster-docker", "dagster-k8s"):
        assert pins[library] == release, library
