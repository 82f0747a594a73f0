"""Diff and stream-out benchmark. Run by hand (not by pytest); results go to BENCHMARKS.md.

    .venv/bin/python benchmarks/diff_bench.py [--rows 1000000 5000000] [--batch 10000]

A model of N rows x 10 columns (bigint id + varchar email/names/plan, integer, decimal(12,2),
timestamp, boolean, double) is generated inside DuckDB with `range()`. Per N, in order:

- setup  `make`:    create the model table in a fresh DuckDB file under /tmp
- phase  `diff1`:   primary-key check + first diff against empty state (all N rows added)
- setup  `commit1`: write run 1's diff into state, as if the destination had acknowledged it all
- phase  `stream1`: stream run 1's diff (N rows) out of the warehouse
- setup  `mutate`:  1% of rows changed, 0.5% removed, 0.5% added
- phase  `diff2`:   primary-key check + the realistic diff (2% of N)
- phase  `stream2`: stream run 2's diff out

Each stream phase runs three ways, each in its own process: `arrow` (only iterate the Arrow
record batches: DuckDB's scan and export), `rows` (+ `RecordBatch.to_pylist()`), `records`
(+ `Mapper.record()` per row, which is the load stage's per-row work minus the destination).

Every phase and setup step runs in a FRESH subprocess so its peak RSS (`ru_maxrss`) is its own.
`start MB` is the RSS after imports and opening the warehouse, before the phase's work.
All phases use the engine's own `Warehouse`, i.e. `RETL_DUCKDB_MEMORY_LIMIT` (default 2GB);
`--stream-memory-limit` overrides it for the stream phases only.

`rows/s`: model rows per second for a diff phase, diff records per second for a stream phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retl_dagster.engine import diff  # noqa: E402
from retl_dagster.engine.config import SyncConfig  # noqa: E402
from retl_dagster.engine.mapping import Mapper  # noqa: E402
from retl_dagster.engine.model_sql import model_select  # noqa: E402
from retl_dagster.engine.state import SyncTables  # noqa: E402
from retl_dagster.engine.warehouse import Warehouse, quote_ident  # noqa: E402

COLUMNS = [
    "email",  # varchar
    "first_name",  # varchar
    "last_name",  # varchar
    "plan",  # varchar
    "logins",  # integer
    "ltv",  # decimal(12, 2)
    "signup_at",  # timestamp
    "is_active",  # boolean
    "score",  # double
]
CONFIG = SyncConfig.model_validate(
    {
        "name": "bench",
        "model": {"table": "bench_model"},
        "primary_key": "id",
        "destination": "none",
        "mappings": [{"from": c, "to": c} for c in COLUMNS],
    }
)
TABLES = SyncTables("bench")
STREAM_MODES = ("arrow", "rows", "records")


# -- the data ---------------------------------------------------------------------------------
def make_model(wh: Warehouse, n: int) -> None:
    wh.execute(f"""create or replace table bench_model as
        select i::bigint as id,
               'user' || i || '@example.com' as email,
               'first' || (i % 1000) as first_name,
               'last' || (i % 7919) as last_name,
               ['free', 'pro', 'enterprise'][1 + i % 3] as plan,
               (i % 500)::integer as logins,
               ((i % 100000) / 100.0)::decimal(12, 2) as ltv,
               timestamp '2024-01-01' + to_seconds(i) as signup_at,
               i % 10 <> 0 as is_active,
               (i % 9973) / 7.0 as score
        from range({n}) t(i)""")


def mutate(wh: Warehouse, n: int) -> None:
    """1% changed (id % 100 = 1), 0.5% removed (id % 200 = 2), 0.5% added (ids >= n)."""
    wh.execute("update bench_model set plan = 'changed', logins = logins + 1 where id % 100 = 1")
    wh.execute("delete from bench_model where id % 200 = 2")
    wh.execute(f"""insert into bench_model
        select {n} + i, 'new' || i || '@example.com', 'new', 'new', 'free', 0, 0.00,
               timestamp '2025-01-01', true, 0.0
        from range({n // 200}) t(i)""")


def expected_counts(name: str, n: int) -> dict[str, int]:
    if name == "diff1":
        return {"added": n, "changed": 0, "removed": 0}
    return {"added": n // 200, "changed": len(range(1, n, 100)), "removed": len(range(2, n, 200))}


def commit_run(wh: Warehouse, run_id: str) -> None:
    """Commit run 1's diff (all added) to the empty state as if every record was acknowledged."""
    wh.execute(
        f"""insert into {TABLES.state} (_retl_key, _retl_hash, _retl_match, _retl_dest_id,
            first_synced_at, last_synced_at, last_run_id)
        select _retl_key, _retl_hash, _retl_match, _retl_dest_id, now(), now(), _retl_run_id
        from {TABLES.diff} where _retl_run_id = ? and _retl_op = 'added'""",
        [run_id],
    )


# -- one phase, in a child process -------------------------------------------------------------
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_phase(name: str, db: str, n: int, batch: int, mode: str, limit: str | None) -> dict:
    out: dict = {}
    with Warehouse(db, memory_limit=limit) as wh:
        out["memory_limit"] = wh.fetchone("select current_setting('memory_limit')")[0]
        out["threads"] = wh.fetchone("select current_setting('threads')")[0]
        out["start_mb"] = rss_mb()
        started = time.perf_counter()
        if name == "make":
            make_model(wh, n)
            out["rows"] = n
        elif name == "mutate":
            mutate(wh, n)
            out["rows"] = sum(expected_counts("diff2", n).values())
        elif name == "commit1":
            commit_run(wh, "r1")
            out["rows"] = wh.fetchone(f"select count(*) from {TABLES.state}")[0]
        elif name in ("diff1", "diff2"):
            run_id = "r1" if name == "diff1" else "r2"
            sql = model_select(CONFIG)
            report = diff.check_keys(wh, CONFIG, sql)
            assert report.ok, report
            out["check_s"] = time.perf_counter() - started
            counts = diff.compute_diff(wh, CONFIG, sql, run_id, report.rows)
            got = {"added": counts.added, "changed": counts.changed, "removed": counts.removed}
            if got != expected_counts(name, n):
                out["mismatch"] = f"expected {expected_counts(name, n)}, got {got}"
            out["rows"] = counts.total
            out["queried"] = counts.rows_queried
        else:  # stream1 / stream2
            run_id = "r1" if name == "stream1" else "r2"
            mapper = Mapper(CONFIG)
            cols = ", ".join(quote_ident(c) for c in CONFIG.source_columns())
            # The load stage's query (delivery.deliver), without its op filter.
            sql = (
                f"select _retl_op, _retl_key, _retl_hash, _retl_match, _retl_dest_id, {cols} "
                f"from {TABLES.diff} where _retl_run_id = ?"
            )
            rows = batches = biggest = 0
            for rb in wh.stream(sql, [run_id], batch_size=batch):
                batches += 1
                biggest = max(biggest, rb.num_rows)
                rows += rb.num_rows
                if mode == "arrow":
                    continue
                pyrows = rb.to_pylist()
                if mode == "records":
                    records = [mapper.record(r["_retl_op"], r["_retl_key"], r) for r in pyrows]
                    del records
                del pyrows
            out.update(rows=rows, batches=batches, biggest_batch=biggest)
        out["seconds"] = time.perf_counter() - started
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["db_mb"] = os.path.getsize(db) / 2**20
    return out


# -- the driver -------------------------------------------------------------------------------
def child(name: str, db: str, n: int, batch: int, mode: str = "-", limit: str = "-") -> dict:
    cmd = [sys.executable, __file__, "--phase", name, db, str(n), str(batch), mode, limit]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"phase {name} (N={n}, {mode}) failed with exit code {res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> str:
    import duckdb
    import pyarrow

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB RAM, Python {platform.python_version()}, "
        f"duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--batch", type=int, default=10_000, help="stream batch size (rows)")
    ap.add_argument("--stream-memory-limit", help="DuckDB memory_limit for the stream phases")
    ap.add_argument("--tmp", default="/tmp", help="where the DuckDB files go")
    ap.add_argument("--phase", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        name, db, n, batch, mode, limit = a.phase
        result = run_phase(name, db, int(n), int(batch), mode, None if limit == "-" else limit)
        print(json.dumps(result))
        return

    env_limit = os.environ.get("RETL_DUCKDB_MEMORY_LIMIT", "2GB")
    stream_limit = a.stream_memory_limit or "-"
    print(machine())
    print(
        f"RETL_DUCKDB_MEMORY_LIMIT={env_limit}"
        + (f", stream phases memory_limit={a.stream_memory_limit}" if a.stream_memory_limit else "")
        + f", stream batch_size={a.batch:,}, DuckDB files under {a.tmp}\n",
        flush=True,
    )
    table = [
        "| rows | phase | records | seconds | rows/s | start MB | peak RSS MB | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    setup = [
        "| rows | step | seconds | peak RSS MB | DuckDB file MB |",
        "|---:|---|---:|---:|---:|",
    ]
    problems: list[str] = []
    total_started = time.perf_counter()

    def row(n: int, phase: str, r: dict, note: str) -> None:
        line = (
            f"| {n:,} | {phase} | {int(r['rows']):,} | {r['seconds']:.2f} | "
            f"{r.get('queried', r['rows']) / r['seconds']:,.0f} | {r['start_mb']:.0f} | "
            f"{r['peak_mb']:.0f} | {note} |"
        )
        table.append(line)
        print(line, flush=True)

    for n in a.rows:
        with tempfile.TemporaryDirectory(prefix="retl_diff_bench_", dir=a.tmp) as tmp:
            db = str(Path(tmp) / "bench.duckdb")
            for step in ("make", "diff1", "commit1", "stream1", "mutate", "diff2", "stream2"):
                if step in ("make", "commit1", "mutate"):
                    r = child(step, db, n, a.batch)
                    setup.append(
                        f"| {n:,} | {step} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
                        f"{r['db_mb']:.0f} |"
                    )
                    print(
                        f"  (setup {step}: {r['seconds']:.1f}s, memory_limit "
                        f"{r['memory_limit']}, threads {r['threads']})",
                        flush=True,
                    )
                elif step.startswith("diff"):
                    r = child(step, db, n, a.batch)
                    row(n, step, r, f"key check {r['check_s']:.2f}s")
                    if "mismatch" in r:
                        problems.append(f"N={n:,} {step}: {r['mismatch']}")
                else:
                    for mode in STREAM_MODES:
                        r = child(step, db, n, a.batch, mode, stream_limit)
                        note = f"{mode}; {r['batches']} batches, max {r['biggest_batch']:,} rows"
                        if r.get("memory_limit") and stream_limit != "-":
                            note += f"; memory_limit {r['memory_limit']}"
                        row(n, f"{step} {mode}", r, note)

    print("\nsetup steps (not phases):\n" + "\n".join(setup))
    print(f"\ntotal wall time {time.perf_counter() - total_started:.0f}s")
    print("\n" + "\n".join(table))
    for p in problems:
        print("DIFF COUNT MISMATCH:", p)


if __name__ == "__main__":
    main()
