"""Where a sync launched from the UI (GraphQL, daemon, queued run) spends its time. By hand:

    .venv/bin/python benchmarks/ui_launch.py        # floors + every variant, 3 runs each; ~20 min
    .venv/bin/python benchmarks/ui_launch.py --variants dev,dev_in_process --repeat 3
    .venv/bin/python benchmarks/ui_launch.py --parts floors

In a temp directory: a fresh RETL_DATA_DIR whose dbt models are built once through Dagster (as
retl_dagster_tests/test_cli.py's `project_env`), then `retl sync demo_users_to_file` once so
every measured run is a no-change run (183 rows queried, nothing to send), then:

- floors (`--parts floors`): `python -c "import dagster"`, loading the definitions
  (`defs()`, with and without DAGSTER_IS_DEV_CLI, which `dagster dev` sets and which makes
  `ensure_dbt_manifest` run `dbt parse` on every load), and `retl sync demo_users_to_file`.
- ui (`--parts ui`): per variant, a fresh DAGSTER_HOME holding retl's dagster.yaml
  (retl_dagster.cli.INSTANCE_YAML, plus the variant's additions), `dagster dev` (or
  `dagster-webserver` + `dagster-daemon run`) on 127.0.0.1, then `--repeat` launches of job
  `sync_demo_users_to_file` exactly as README's "Starting a sync from outside Dagster"
  (addDynamicPartition + launchPipelineExecution in one request), each waited for, and its event
  log split into phases by the events' own timestamps.

Phases: `request` (POST sent -> RUN_ENQUEUED), `queued` (-> RUN_DEQUEUED: the daemon's dequeue
loop), `launch` (-> RUN_STARTING), `run proc` (-> RUN_START: run worker spawn + code location
load), per step `to <step>` (previous milestone -> STEP_START: with the multiprocess executor a
step worker spawn + code location load, split into `worker start` (-> STEP_WORKER_STARTED)
and `code load`) and `<step>` (STEP_START -> STEP_SUCCESS: the work),
`finish` (last step -> RUN_SUCCESS) and `total` (POST sent -> RUN_SUCCESS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
SYNC = "demo_users_to_file"
JOB = f"sync_{SYNC}"
PARTITIONS = f"retl_{SYNC}_runs"
REPO = {"repositoryLocationName": "retl_dagster", "repositoryName": "__repository__"}
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
# The multiprocess executor's step workers forked from a server that imported dagster once.
FORKSERVER: dict[str, Any] = {
    "execution": {"config": {"multiprocess": {"start_method": {"forkserver": {}}}}}
}
DEQUEUE_1S = "run_queue:\n  dequeue_interval_seconds: 1\n"

# name -> (servers, run config for the launch or None, lines added to retl's dagster.yaml)
VARIANTS: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "dev": ("dev", None, ""),
    "dev_in_process": ("dev", IN_PROCESS, ""),
    "dev_dequeue_1s": ("dev", None, DEQUEUE_1S),
    "dev_in_process_dequeue_1s": ("dev", IN_PROCESS, DEQUEUE_1S),
    "dev_forkserver": ("dev", FORKSERVER, ""),
    "split": ("split", None, ""),
    "split_in_process_dequeue_1s": ("split", IN_PROCESS, DEQUEUE_1S),
}

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
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> float:
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {done.stderr[-2000:]}")
    return took


def project_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_") and k != "RETL_STRICT"
    }
    env |= {
        "RETL_DATA_DIR": str(tmp / "data"),
        "RETL_WAREHOUSE": str(tmp / "data" / "warehouse.duckdb"),
        "DAGSTER_HOME": str(tmp / "build_home"),
    }
    (tmp / "build_home").mkdir()
    from retl_dagster.cli import INSTANCE_YAML

    (tmp / "build_home" / "dagster.yaml").write_text(INSTANCE_YAML)
    took = timed(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "retl_dagster.definitions"]
        + ["--select", "group:dbt_models"],
        env,
        tmp,
    )
    print(f"dbt models built through Dagster in {took:.1f}s", flush=True)
    # The first sync sends all 183 users; every measured run after it has nothing to send.
    took = timed([str(BIN / "retl"), "sync", SYNC, "--json"], env, tmp)
    print(f"first retl sync (183 added) {took:.1f}s", flush=True)
    return env


def floors(env: dict[str, str], tmp: Path, repeat: int) -> dict[str, list[float]]:
    py = str(BIN / "python")
    load = "from retl_dagster.definitions import defs; defs()"
    cases = {
        "python -c 'import dagster'": ([py, "-c", "import dagster"], {}),
        "load definitions (defs())": ([py, "-c", load], {}),
        "load definitions, DAGSTER_IS_DEV_CLI=1 (dbt parse)": (
            [py, "-c", load],
            {"DAGSTER_IS_DEV_CLI": "1"},
        ),
        f"retl sync {SYNC} (no change)": ([str(BIN / "retl"), "sync", SYNC, "--json"], {}),
    }
    out: dict[str, list[float]] = {}
    for name, (cmd, extra) in cases.items():
        out[name] = [timed(cmd, {**env, **extra}, tmp) for _ in range(repeat)]
        print(f"{name}: {[round(x, 2) for x in out[name]]}", flush=True)
    return out


class Servers:
    """`dagster dev`, or webserver + daemon, each in its own process group."""

    def __init__(self, kind: str, env: dict[str, str], cwd: Path, port: int) -> None:
        workspace = str(ROOT / "workspace.yaml")
        host = ["-h", "127.0.0.1", "-p", str(port)]
        if kind == "dev":
            cmds = [[str(BIN / "dagster"), "dev", "-w", workspace, *host]]
        else:
            cmds = [
                [str(BIN / "dagster-webserver"), "-w", workspace, *host],
                [str(BIN / "dagster-daemon"), "run", "-w", workspace],
            ]
        self.procs = []
        for i, cmd in enumerate(cmds):
            log = open(cwd / f"server_{kind}_{i}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    cmd, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)


def wait_ready(url: str, instance: Any, deadline: float) -> None:
    import httpx

    loaded = ""
    while loaded != "LOADED":
        if time.monotonic() > deadline:
            raise TimeoutError(f"code location not loaded ({loaded!r})")
        time.sleep(1)
        try:
            entries = httpx.post(
                url,
                json={
                    "query": "{ workspaceOrError { ... on Workspace { locationEntries "
                    "{ name loadStatus } } } }"
                },
                timeout=10,
            ).json()["data"]["workspaceOrError"]["locationEntries"]
        except (httpx.TransportError, KeyError, TypeError, ValueError):
            continue
        loaded = next((e["loadStatus"] for e in entries if e["name"] == "retl_dagster"), "")
    while "QUEUED_RUN_COORDINATOR" not in instance.get_daemon_heartbeats():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon's run queue did not start")
        time.sleep(1)


def launch_and_wait(url: str, instance: Any, run_config: dict[str, Any] | None) -> dict:
    import httpx
    from dagster import DagsterRunStatus

    key = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    params: dict[str, Any] = {
        "selector": {**REPO, "pipelineName": JOB},
        "executionMetadata": {
            "tags": [
                {"key": "dagster/partition", "value": key},
                {"key": "retl/trigger", "value": "benchmark"},
            ]
        },
    }
    if run_config is not None:
        params["runConfigData"] = run_config
    t0 = time.time()
    answer = httpx.post(
        url,
        json={
            "query": LAUNCH,
            "variables": {"repo": REPO, "partitions": PARTITIONS, "key": key, "params": params},
        },
        timeout=120,
    ).json()
    t_answer = time.time()
    launched = answer["data"]["launchPipelineExecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch refused: {answer}")
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    while True:
        run = instance.get_run_by_id(run_id)
        if run.status in (
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        ):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run.status} after 300s")
        time.sleep(0.5)
    if run.status != DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run_id} ended {run.status}")
    events = [
        (e.dagster_event.event_type.name, e.step_key, e.timestamp)
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None
    ]
    return {
        "run_id": run_id,
        "partition": key,
        "t0": t0,
        "answer_s": t_answer - t0,
        "events": events,
    }


def phases(run: dict) -> dict[str, float]:
    """Consecutive milestones of one run, in seconds, keyed by phase name (see the docstring)."""
    first: dict[tuple[str, str | None], float] = {}
    for kind, step, ts in run["events"]:
        first.setdefault((kind, step), ts)
    t = {k: v for (k, s), v in first.items() if s is None}
    out = {"request": t["RUN_ENQUEUED"] - run["t0"]}
    if "RUN_DEQUEUED" in t:
        out["queued"] = t["RUN_DEQUEUED"] - t["RUN_ENQUEUED"]
        out["launch"] = t["RUN_STARTING"] - t["RUN_DEQUEUED"]
    else:  # Dagster 1.13's daemon logs no RUN_DEQUEUED: the queue wait ends at RUN_STARTING
        out["queued"] = t["RUN_STARTING"] - t["RUN_ENQUEUED"]
    out["run proc"] = t["RUN_START"] - t["RUN_STARTING"]
    # The run worker's first engine event ("Started process for run") splits spawn from load.
    spawned = next(
        (ts for k, s, ts in run["events"] if k == "ENGINE_EVENT" and ts > t["RUN_STARTING"]),
        None,
    )
    if spawned is not None and spawned < t["RUN_START"]:
        out["run proc: worker start"] = spawned - t["RUN_STARTING"]
        out["run proc: code load"] = t["RUN_START"] - spawned
    steps = sorted(
        ((ts, s) for (k, s), ts in first.items() if k == "STEP_START" and s), key=lambda x: x[0]
    )
    previous = t["RUN_START"]
    for started, step in steps:
        done = first[("STEP_SUCCESS", step)]
        short = step.split("__")[-1] if "__" in step else step
        out[f"to {short}"] = started - previous
        spawned = first.get(("STEP_WORKER_STARTED", step))
        if spawned is not None:  # multiprocess: worker spawn + import, then code location load
            out[f"to {short}: worker start"] = spawned - previous
            out[f"to {short}: code load"] = started - spawned
        out[short] = done - started
        previous = done
    out["finish"] = t["RUN_SUCCESS"] - previous
    out["total"] = t["RUN_SUCCESS"] - run["t0"]
    return out


def run_variant(
    name: str, env: dict[str, str], tmp: Path, repeat: int, settle_s: float
) -> list[dict]:
    from dagster import DagsterInstance

    from retl_dagster.cli import INSTANCE_YAML

    kind, run_config, extra_yaml = VARIANTS[name]
    home = tmp / f"home_{name}"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML + extra_yaml)
    venv = {**env, "DAGSTER_HOME": str(home)}
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    # Create the instance's sqlite storages first: a webserver and a daemon started together on
    # an empty DAGSTER_HOME race to create them (alembic: "more than one head").
    instance = DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    instance.get_daemon_heartbeats()
    instance.all_instigator_state()
    started = time.monotonic()
    servers = Servers(kind, venv, tmp, port)
    runs: list[dict] = []
    try:
        wait_ready(url, instance, time.monotonic() + 240)
        print(f"[{name}] servers ready in {time.monotonic() - started:.1f}s", flush=True)
        time.sleep(settle_s)  # let the start-up's code loads finish before the first launch
        for i in range(repeat):
            load = os.getloadavg()[0]
            run = launch_and_wait(url, instance, run_config)
            try:
                run["phases"] = phases(run)
            except KeyError:
                print(json.dumps(run["events"], indent=0))
                raise
            run["loadavg_1m"] = load
            runs.append(run)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in run["phases"].items())
            print(f"[{name}] run {i + 1} (load {load:.2f}): {shown}", flush=True)
            time.sleep(2)
    finally:
        servers.stop()
    return runs


def median_table(results: dict[str, list[dict]], import_s: float | None) -> str:
    names = list(results)
    cols: list[str] = []
    for runs in results.values():
        for k in runs[0]["phases"]:
            if k not in cols:
                cols.append(k)
    lines = [
        "| phase (median s) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for c in cols:
        cells = []
        for n in names:
            vals = [r["phases"][c] for r in results[n] if c in r["phases"]]
            cells.append(f"{statistics.median(vals):.2f}" if vals else "")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if import_s:
        cells = [
            f"{statistics.median(r['phases']['total'] for r in results[n]) / import_s:.1f}x"
            for n in names
        ]
        lines.append("| total / import dagster | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts", default="floors,ui")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start-up")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    parser.add_argument("--out", type=Path, default=None, help="write every run as JSON")
    args = parser.parse_args()
    parts = args.parts.split(",")
    print(f"cores {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="retl_ui_launch_"))
    with keep if args.keep else tempfile.TemporaryDirectory(prefix="retl_ui_launch_") as d:
        tmp = Path(d)
        print(f"working in {tmp}", flush=True)
        env = project_env(tmp)
        result: dict[str, Any] = {"floors": {}, "ui": {}}
        if "floors" in parts:
            result["floors"] = floors(env, tmp, args.repeat)
            if args.out:
                args.out.write_text(json.dumps(result, indent=1))
        if "ui" in parts:
            for name in args.variants.split(","):
                result["ui"][name] = run_variant(name, env, tmp, args.repeat, args.settle)
                if args.out:
                    args.out.write_text(json.dumps(result, indent=1))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    import_s = None
    if result["floors"]:
        print("\n| floor (median s) | s | / import dagster |\n|---|---:|---:|")
        import_s = statistics.median(result["floors"]["python -c 'import dagster'"])
        for name, vals in result["floors"].items():
            m = statistics.median(vals)
            print(f"| {name} | {m:.2f} | {m / import_s:.1f}x |")
    if result["ui"]:
        print()
        print(median_table(result["ui"], import_s))
    print(f"\nload at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
