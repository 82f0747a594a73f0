"""Our engine against its reference points, on the same data, machine and receiver. By hand:

    .venv/bin/pip install -e '.[bench]'          # dlt, for the dlt sink reference
    .venv/bin/python benchmarks/side_by_side.py                       # 100k, 1M, 10M; ~15 min
    .venv/bin/python benchmarks/side_by_side.py --rows 100000 --repeat 1 --parts diff

Parts (`--parts`, default all):
- diff: per N, a model of N rows x 10 columns (as benchmarks/diff_bench.py) whose first run is
  committed to state, then 2% churn (1% changed, 0.5% removed, 0.5% added). Measured:
  `floor` (DuckDB scans and hashes the model and the state, nothing else), `straightforward`
  (hash the model and last run's full snapshot, full outer join), `engine` (our compute_diff,
  writing the run's diff), `pandas` (read model and snapshot into pandas, merge, compare).
- delivery: first runs of `--records` rows (200k and 1M; the rate is the marginal one between
  them, so start-up cancels out) to one loopback receiver (benchmarks/receiver.py, its own
  process): `raw httpx` (AsyncClient, records prepared in memory first, JSON batches, N tasks),
  `dlt sink` (@dlt.destination(batch_size=100) posting each batch with httpx), `engine` (our
  load stage: stream the diff from DuckDB, map, deliver through the webhook destination with its
  concurrency, commit state).
- growth (not in the default): the engine's load stage alone at each of `--rows`, once each.
- e2e: a sync of a 1M-row model to the receiver through Dagster in a fresh process (Python and
  Dagster start-up, definitions from the components, a real DagsterInstance, run_sync: the path
  `retl sync` takes), then a second run after 2% churn, and an empty Dagster run for reference.

Every measurement runs in a fresh subprocess (peak RSS = its own `ru_maxrss`); the table shows
the median of `--repeat` runs and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = [
    "email",
    "first_name",
    "last_name",
    "plan",
    "logins",
    "ltv",
    "signup_at",
    "is_active",
    "score",
]
SYNC_YAML = """
name: bench
model: {table: bench_model}
primary_key: id
destination: hook
mode: upsert
delete_behavior: delete
mappings:
""" + "".join(f"  - {{from: {c}, to: {c}}}\n" for c in COLUMNS)
DEST_YAML = """
destinations:
  hook: {type: webhook, url: "URL", batch_size: BATCH, concurrency: CONC}
"""


INCREMENTAL = "incremental: {cursor: updated_at, full_every: 24h}\n"
BEFORE, AFTER = "2026-01-01 00:00:00", "2026-06-01 00:00:00"
"""`updated_at`: run 1's rows up to BEFORE (one second apart, the last at BEFORE), the rows the
churn changes or adds at AFTER."""


def _config(incremental: bool = False) -> Any:
    import yaml

    from retl_dagster.engine.config import SyncConfig

    return SyncConfig.model_validate(
        yaml.safe_load(SYNC_YAML + (INCREMENTAL if incremental else ""))
    )


def cpu_s() -> float:
    """This process's CPU seconds so far (user + system, all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- data ------------------------------------------------------------------------------------
def make_model(con: Any, n: int, table: str = "bench_model", start: int = 0) -> None:
    con.execute(f"""create or replace table {table} as
        select i::bigint as id,
               'user' || i || '@example.com' as email,
               'first' || (i % 1000) as first_name,
               'last' || (i % 5000) as last_name,
               ['free', 'pro', 'enterprise'][1 + (i % 3)] as plan,
               (i % 500)::integer as logins,
               (i * 1.37)::decimal(12, 2) as ltv,
               timestamp '2020-01-01' + to_seconds(i) as signup_at,
               i % 7 <> 0 as is_active,
               (i % 1000) / 7.0 as score,
               timestamp '{BEFORE}' - to_seconds({start + n - 1} - i) as updated_at
        from range({start}, {start + n}) t(i)""")


def churn(con: Any, n: int) -> None:
    """1% changed, 0.5% removed, 0.5% added (changed and added rows with a later updated_at)."""
    con.execute(
        f"update bench_model set plan = plan || '+', updated_at = timestamp '{AFTER}' "
        "where id % 100 = 0"
    )
    con.execute("delete from bench_model where id % 200 = 1")
    make_model(con, n // 200, "bench_new", start=n)
    con.execute(f"update bench_new set updated_at = timestamp '{AFTER}'")
    con.execute("insert into bench_model select * from bench_new")
    con.execute("drop table bench_new")


def task_make(db: str, n: int) -> dict[str, Any]:
    """Model, the pandas user's snapshot, run 1 diffed and committed as acknowledged, churn."""
    from retl_dagster.engine import diff
    from retl_dagster.engine.runs import record_run
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _config()
    with Warehouse(db) as wh:
        make_model(wh.con, n)
        wh.execute("create or replace table bench_snapshot as select * from bench_model")
        diff.compute_diff(wh, cfg, "select * from bench_model", "r1", n)
        wh.execute(
            'insert into _retl."bench__state" select cast(_retl_key as bigint), '
            "cast(_retl_hash as ubigint), _retl_match, _retl_dest_id, now(), now(), 'r1' "
            """from _retl."bench__diff" where _retl_run_id = 'r1\'"""
        )
        wh.execute('delete from _retl."bench__diff"')
        # Run 1 finished as an incremental sync's full diff would: its cursor is the start.
        record_run(
            wh,
            "bench",
            "r1",
            status="succeeded",
            diff_kind="full",
            cursor_to=BEFORE,
            diff_signature=diff.diff_signature(_config(True), "select * from bench_model"),
            finished=True,
        )
        churn(wh.con, n)
    return {}


# -- diff contenders ---------------------------------------------------------------------------
def task_floor(db: str) -> dict[str, Any]:
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse(db, read_only=True) as wh:
        t = time.perf_counter()
        wh.fetchall(f"select sum(hash(id, {', '.join(COLUMNS)})) from bench_model")
        wh.fetchall('select sum(hash(_retl_key, _retl_hash)) from _retl."bench__state"')
        return {"seconds": time.perf_counter() - t}


def task_straightforward(db: str) -> dict[str, Any]:
    from retl_dagster.engine.warehouse import Warehouse

    h = f"hash({', '.join(COLUMNS)})"
    with Warehouse(db, read_only=True) as wh:
        t = time.perf_counter()
        [(n,)] = wh.fetchall(
            f"select count(*) from (select id, {h} as h from bench_model) m "
            f"full outer join (select id, {h} as h from bench_snapshot) s using (id) "
            "where m.h is distinct from s.h"
        )
        return {"seconds": time.perf_counter() - t, "changes": n}


def task_engine_diff(db: str) -> dict[str, Any]:
    from retl_dagster.engine import diff
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse(db) as wh:
        t = time.perf_counter()
        counts = diff.compute_diff(wh, _config(), "select * from bench_model", "r2", 0)
        return {"seconds": time.perf_counter() - t, "changes": counts.total}


def task_engine_incremental(db: str) -> dict[str, Any]:
    """What diff_run does for an incremental sync, less the key check (engine_diff has none):
    plan from the last finished run, read the cursor's high mark, diff the rows past it."""
    from retl_dagster.engine import diff
    from retl_dagster.engine.warehouse import Warehouse

    cfg, model = _config(incremental=True), "select * from bench_model"
    with Warehouse(db) as wh:
        t = time.perf_counter()
        plan = diff.plan_diff(wh, cfg, model)
        assert plan.incremental and plan.cursor_from, plan
        assert diff.cursor_high(wh, cfg, model) == AFTER
        rows = diff.incremental_sql(wh, cfg, model, plan.cursor_from)
        counts = diff.compute_diff(wh, cfg, rows, "r3", 0, incremental=True)
        return {"seconds": time.perf_counter() - t, "changes": counts.total}


def task_pandas(db: str) -> dict[str, Any]:
    import duckdb
    import pandas as pd

    t = time.perf_counter()
    con = duckdb.connect(db, read_only=True)
    model = con.execute("select * from bench_model").df()
    snapshot = con.execute("select * from bench_snapshot").df()
    merged = model.merge(snapshot, on="id", how="outer", suffixes=("", "_old"), indicator=True)
    changed = pd.Series(False, index=merged.index)
    for c in COLUMNS:
        changed |= ~(
            (merged[c] == merged[f"{c}_old"]) | (merged[c].isna() & merged[f"{c}_old"].isna())
        )
    n = int(((merged["_merge"] != "both") | changed).sum())
    return {"seconds": time.perf_counter() - t, "changes": n}


# -- delivery contenders -----------------------------------------------------------------------
def _records(n: int) -> list[dict[str, Any]]:
    """n model rows as JSON-ready dicts (what a hand-written client would send)."""
    import duckdb

    con = duckdb.connect()
    make_model(con, n)
    rows = con.sql("select * from bench_model").to_arrow_table().to_pylist()
    return [
        {
            "op": "added",
            "id": str(r["id"]),
            "fields": {k: _plain(v) for k, v in r.items() if k != "id"},
        }
        for r in rows
    ]


def _plain(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def task_raw_httpx(url: str, n: int, batch: int, concurrency: int) -> dict[str, Any]:
    import httpx

    records = _records(n)

    async def main() -> None:
        chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for c in chunks:
            queue.put_nowait(c)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:

            async def worker() -> None:
                while not queue.empty():
                    chunk = queue.get_nowait()
                    body = json.dumps({"records": chunk}, separators=(",", ":")).encode()
                    r = await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                    r.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    t, cpu = time.perf_counter(), cpu_s()
    asyncio.run(main())
    return {"seconds": time.perf_counter() - t, "cpu_s": cpu_s() - cpu}


def task_dlt(url: str, n: int, batch: int) -> dict[str, Any]:
    import dlt
    import httpx

    records = _records(n)
    client = httpx.Client()

    @dlt.destination(batch_size=batch, name="bench_receiver")
    def receiver(items: Any, table: Any) -> None:
        body = json.dumps({"records": items}, separators=(",", ":"), default=str).encode()
        client.post(
            url, content=body, headers={"content-type": "application/json"}
        ).raise_for_status()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DLT_DATA_DIR"] = tmp
        pipeline = dlt.pipeline(f"bench_{os.getpid()}", destination=receiver, pipelines_dir=tmp)
        t = time.perf_counter()
        pipeline.run(records, table_name="records")
        return {"seconds": time.perf_counter() - t}


def task_engine_load(url: str, n: int, batch: int, concurrency: int) -> dict[str, Any]:
    from retl_dagster.destinations.impl.webhook import WebhookConfig, WebhookDestination
    from retl_dagster.engine import diff
    from retl_dagster.engine.delivery import load
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _config()
    with tempfile.TemporaryDirectory() as tmp, Warehouse(f"{tmp}/w.duckdb") as wh:
        make_model(wh.con, n)
        diff.compute_diff(wh, cfg, "select * from bench_model", "r1", n)
        dest = WebhookDestination(
            "hook", WebhookConfig(url=url, batch_size=batch, concurrency=concurrency)
        )
        t, cpu = time.perf_counter(), cpu_s()
        result = load(wh, cfg, dest, "r1")
        seconds, cpu = time.perf_counter() - t, cpu_s() - cpu
        dest.close()
        assert result.total_succeeded == n, result
        return {"seconds": seconds, "cpu_s": cpu}


# -- end to end --------------------------------------------------------------------------------
def task_e2e_make(db: str, n: int) -> dict[str, Any]:
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse(db) as wh:
        make_model(wh.con, n)
    return {}


def task_e2e_churn(db: str, n: int) -> dict[str, Any]:
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse(db) as wh:
        churn(wh.con, n)
    return {}


def task_e2e_run(url: str, batch: int, concurrency: int) -> dict[str, Any]:
    """Timed from the parent (process start to exit): imports, definitions, instance, run."""
    import dagster as dg
    from dagster.components.core.component_tree import ComponentTree

    from retl_dagster.components import Destinations, Sync
    from retl_dagster.components.references import check_references
    from retl_dagster.runner import run_sync

    context = ComponentTree.for_test().load_context
    dest = (
        DEST_YAML.replace("URL", url).replace("BATCH", str(batch)).replace("CONC", str(concurrency))
    )
    defs = dg.Definitions.merge(
        Destinations.resolve_from_yaml(dest).build_defs(context),
        Sync.resolve_from_yaml(SYNC_YAML).build_defs(context),
    )
    check_references(defs)
    out = run_sync(defs, "bench", dg.DagsterInstance.get(), log_level="WARNING")
    assert out.status == "succeeded", out.summary
    return {"changes": out.summary["added"] + out.summary["changed"] + out.summary["removed"]}


def task_empty_run() -> dict[str, Any]:
    import dagster as dg

    @dg.op
    def nothing() -> None:
        return None

    @dg.job
    def empty() -> None:
        nothing()

    assert empty.execute_in_process(instance=dg.DagsterInstance.get()).success
    return {}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    name[5:]: fn for name, fn in globals().items() if name.startswith("task_")
}


def worker(task: str, args: list[Any]) -> None:
    out = TASKS[task](*args)
    out["rss_mb"] = rss_mb()
    print(json.dumps(out))


def run(task: str, *args: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", task, json.dumps(list(args))],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{task} failed: {proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- parts -------------------------------------------------------------------------------------
def part_diff(rows: list[int], repeat: int, pandas_max: int) -> list[str]:
    lines = [
        "| rows | contender | median s | peak RSS MB | vs floor | engine faster by |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in rows:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"{tmp}/bench.duckdb"
            run("make", db, n)
            results: dict[str, list[dict[str, Any]]] = {}
            contenders = ["floor", "straightforward", "engine_diff", "engine_incremental"] + (
                ["pandas"] if n <= pandas_max else []
            )
            for _ in range(repeat):
                for c in contenders:
                    results.setdefault(c, []).append(run(c, db))
            floor = median(results["floor"], "seconds")
            engine = median(results["engine_diff"], "seconds")
            for c in contenders:
                s = median(results[c], "seconds")
                rss = max(r["rss_mb"] for r in results[c])
                ours = c in ("floor", "engine_diff", "engine_incremental")
                slower = "" if ours else f"{s / engine:.1f}x"
                emit(lines, f"{n:,}", c, f"{s:.2f}", f"{rss:.0f}", f"{s / floor:.1f}x", slower)
    return lines


def part_delivery(sizes: list[int], repeat: int) -> list[str]:
    """Each contender delivers a first run of each size; its marginal rate is the records
    between the smallest and the largest over the time between them, so start-up (imports,
    the spool, the last commit) cancels out."""
    small, large = min(sizes), max(sizes)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "receiver.py"), str(port)])
    try:
        _wait(port)
        contenders: list[tuple[str, str, int, tuple[Any, ...]]] = [
            ("raw httpx, batch 100, 8 tasks", "raw_httpx", 100, (url, 100, 8)),
            ("engine, batch 100, concurrency 8", "engine_load", 100, (url, 100, 8)),
            ("raw httpx, batch 500, 8 tasks", "raw_httpx", 500, (url, 500, 8)),
            ("engine, batch 500, concurrency 8", "engine_load", 500, (url, 500, 8)),
        ]
        try:
            import dlt  # noqa: F401

            contenders.append(("dlt sink, batch_size 100", "dlt", 100, (url, 100)))
        except ImportError:
            print("dlt is not installed (pip install -e '.[bench]'): no dlt sink row")
        # Rounds interleave the contenders, so a machine that slows down for a while slows
        # them all, and each time is the median of its rounds.
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for label, task, _, args in contenders:
                for n in (small, large):
                    runs.setdefault((label, n), []).append(run(task, args[0], n, *args[1:]))
        seconds = {key: median(found, "seconds") for key, found in runs.items()}

        def marginal(label: str) -> float:
            return (large - small) / (seconds[label, large] - seconds[label, small])

        raw = {b: marginal(f"raw httpx, batch {b}, 8 tasks") for b in (100, 500)}
        lines = [
            f"| contender | {small:,} s | {large:,} s | marginal records/s "
            f"| vs raw httpx (same batch) | {small:,} run vs raw |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, _, batch, _ in contenders:
            rate = marginal(label)
            first = seconds[f"raw httpx, batch {batch}, 8 tasks", small] / seconds[label, small]
            emit(
                lines,
                label,
                f"{seconds[label, small]:.2f}",
                f"{seconds[label, large]:.2f}",
                f"{rate:,.0f}",
                f"{rate / raw[batch]:.2f}x",
                f"{first:.2f}x",
            )
        return lines
    finally:
        server.terminate()
        server.wait()


def part_growth(rows: list[int]) -> list[str]:
    """The engine's load stage (batch 100, concurrency 8) as the diff grows: time and memory."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "receiver.py"), str(port)])
    lines = ["| records | seconds | records/s | peak RSS MB |", "|---:|---:|---:|---:|"]
    try:
        _wait(port)
        for n in rows:
            r = run("engine_load", url, n, 100, 8)
            emit(
                lines,
                f"{n:,}",
                f"{r['seconds']:.2f}",
                f"{n / r['seconds']:,.0f}",
                f"{r['rss_mb']:.0f}",
            )
        return lines
    finally:
        server.terminate()
        server.wait()


def part_e2e(n: int, repeat: int) -> list[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "receiver.py"), str(port)])
    lines = [
        "| run | records | median wall s | records/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    try:
        _wait(port)
        firsts, seconds, empties = [], [], []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                env = {"DAGSTER_HOME": f"{tmp}/home", "RETL_WAREHOUSE": f"{tmp}/w.duckdb"}
                Path(env["DAGSTER_HOME"]).mkdir()
                run("e2e_make", env["RETL_WAREHOUSE"], n)
                firsts.append(run("e2e_run", url, 100, 8, env=env))
                run("e2e_churn", env["RETL_WAREHOUSE"], n)
                seconds.append(run("e2e_run", url, 100, 8, env=env))
                empties.append(run("empty_run", env=env))
        for label, rs in (
            ("first run (all added)", firsts),
            ("second run, 2% churn", seconds),
            ("empty Dagster run", empties),
        ):
            wall = median(rs, "wall")
            changes = int(median(rs, "changes")) if "changes" in rs[0] else 0
            rate = f"{changes / wall:,.0f}" if changes else ""
            rss = max(r["rss_mb"] for r in rs)
            emit(lines, label, f"{changes:,}", f"{wall:.2f}", rate, f"{rss:.0f}")
        return lines
    finally:
        server.terminate()
        server.wait()


def emit(lines: list[str], *cells: str) -> None:
    """Add a Markdown table row and show it now (a long benchmark shows progress)."""
    lines.append("| " + " | ".join(cells) + " |")
    print(lines[-1], flush=True)


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("receiver did not start")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--records", type=int, nargs=2, default=[200_000, 1_000_000])
    ap.add_argument("--e2e-rows", type=int, default=1_000_000)
    ap.add_argument("--pandas-max", type=int, default=10_000_000)
    ap.add_argument("--parts", default="diff,delivery,e2e")
    a = ap.parse_args()
    parts = a.parts.split(",")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"RETL_DUCKDB_MEMORY_LIMIT={os.environ.get('RETL_DUCKDB_MEMORY_LIMIT', '2GB (default)')}"
    )
    out: list[str] = []
    if "diff" in parts:
        out += ["", "Diff (2% churn):", ""] + part_diff(a.rows, a.repeat, a.pandas_max)
    if "delivery" in parts:
        out += ["", "Delivery:", ""] + part_delivery(a.records, a.repeat)
    if "growth" in parts:
        out += ["", "Delivery growth (engine load, one run each):", ""] + part_growth(a.rows)
    if "e2e" in parts:
        out += ["", f"End to end ({a.e2e_rows:,} rows, webhook batch 100, concurrency 8):", ""]
        out += part_e2e(a.e2e_rows, a.repeat)
    print("\n".join(out))


if __name__ == "__main__":
    main()
