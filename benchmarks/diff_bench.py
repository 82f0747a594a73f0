"""Diff and stream-out benchmark (run by hand; results go to BENCHMARKS.md).

    .venv/bin/python benchmarks/diff_bench.py [--rows 1000000 5000000] [--batch 10000]

A model of N rows x 10 columns is generated inside DuckDB. Run 1 diffs it against empty state
(all added) and commits that state; then 1% of rows change, 0.5% are added and 0.5% removed, and
run 2 diffs again. Each phase runs in a fresh subprocess so its peak RSS is its own:

- `diff1`:   first diff (N added)
- `diff2`:   the realistic diff (2% of N)
- `stream1`: stream run 1's diff (N rows) out in Arrow batches and map every row to a Record
- `stream2`: the same for run 2's diff

Peak RSS includes DuckDB's buffer pool, which caches pages of the file up to its memory limit.
The diff phases run with RETL_DUCKDB_MEMORY_LIMIT (default 2GB); the stream phases with
STREAM_MEMORY_LIMIT, so their RSS shows what streaming itself holds: one Arrow batch and the
Records built from it, whatever the size of the diff.
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
from retl_dagster.engine.models import model_select  # noqa: E402
from retl_dagster.engine.state import SyncTables  # noqa: E402
from retl_dagster.engine.warehouse import Warehouse, quote_ident  # noqa: E402

STREAM_MEMORY_LIMIT = "128MB"
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
CONFIG = SyncConfig.model_validate(
    {
        "name": "bench",
        "model": {"table": "bench_model"},
        "primary_key": "id",
        "destination": "none",
        "mappings": [{"from": c, "to": c} for c in COLUMNS],
    }
)


def make_model(wh: Warehouse, n: int) -> None:
    wh.execute(f"""create or replace table bench_model as
        select i::bigint as id, 'user' || i || '@example.com' as email,
               'first' || (i % 1000) as first_name, 'last' || (i % 7919) as last_name,
               ['free', 'pro', 'enterprise'][1 + i % 3] as plan, (i % 500)::integer as logins,
               ((i % 100000) / 100.0)::decimal(12, 2) as ltv,
               timestamp '2024-01-01' + to_seconds(i) as signup_at,
               i % 10 <> 0 as is_active, (i % 9973) / 7.0 as score
        from range({n}) t(i)""")


def mutate(wh: Warehouse, n: int) -> None:
    """1% changed, 0.5% removed, 0.5% added."""
    wh.execute("update bench_model set plan = 'changed' where id % 100 = 1")
    wh.execute("delete from bench_model where id % 200 = 2")
    wh.execute(f"""insert into bench_model select {n} + i, 'new' || i || '@example.com', 'n', 'n',
        'free', 0, 0, timestamp '2025-01-01', true, 0 from range({n // 200}) t(i)""")


def commit_run(wh: Warehouse, run_id: str) -> None:
    """Commit a run's diff to state as if every record was acknowledged (no destination)."""
    t = SyncTables("bench")
    wh.execute(
        f"""insert into {t.state} select _retl_key, _retl_hash, _retl_match, _retl_dest_id,
        now(), now(), _retl_run_id from {t.diff} where _retl_run_id = ? and _retl_op <> 'removed'
        on conflict (_retl_key) do update set _retl_hash = excluded._retl_hash""",
        [run_id],
    )
    wh.execute(
        f"""delete from {t.state} where _retl_key in (select _retl_key from {t.diff}
        where _retl_run_id = ? and _retl_op = 'removed')""",
        [run_id],
    )


def phase(name: str, db: str, n: int, batch: int) -> dict[str, float]:
    """Run one phase in this process and return its measurements."""
    out: dict[str, float] = {}
    limit = STREAM_MEMORY_LIMIT if name.startswith("stream") else None
    with Warehouse(db, memory_limit=limit) as wh:
        sql = model_select(CONFIG)
        started = time.perf_counter()
        if name in ("diff1", "diff2"):
            run_id = "r1" if name == "diff1" else "r2"
            report = diff.check_keys(wh, CONFIG, sql)
            out["check_s"] = time.perf_counter() - started
            counts = diff.compute_diff(wh, CONFIG, sql, run_id, report.rows)
            out["rows"] = counts.total
            out["seconds"] = time.perf_counter() - started
            commit_started = time.perf_counter()
            commit_run(wh, run_id)
            out["commit_s"] = time.perf_counter() - commit_started
        else:
            run_id = "r1" if name == "stream1" else "r2"

            t = SyncTables("bench")
            mapper = Mapper(CONFIG)
            cols = ", ".join(quote_ident(c) for c in CONFIG.source_columns())
            rows = 0
            for rb in wh.stream(
                f"select _retl_op, _retl_key, _retl_hash, _retl_match, _retl_dest_id, {cols} "
                f"from {t.diff} where _retl_run_id = ?",
                [run_id],
                batch_size=batch,
            ):
                for r in rb.to_pylist():
                    mapper.record(r["_retl_op"], r["_retl_key"], r)
                rows += rb.num_rows
            out["rows"] = rows
            out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child(args: list[str]) -> dict[str, float]:
    res = subprocess.run(
        [sys.executable, __file__, "--phase", *args], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--phase", nargs=4, metavar=("NAME", "DB", "N", "BATCH"))
    a = ap.parse_args()
    if a.phase:
        name, db, n, batch = a.phase
        print(json.dumps(phase(name, db, int(n), int(batch))))
        return
    import duckdb

    print(
        f"python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"{os.cpu_count()} cores, diff memory_limit "
        f"{os.environ.get('RETL_DUCKDB_MEMORY_LIMIT', '2GB')}, stream memory_limit "
        f"{STREAM_MEMORY_LIMIT}, batch {a.batch}"
    )
    print("| rows | phase | records | seconds | records/s | peak RSS MB | notes |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for n in a.rows:
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "bench.duckdb")
            with Warehouse(db) as wh:
                make_model(wh, n)
            for name in ("diff1", "stream1", "mutate", "diff2", "stream2"):
                if name == "mutate":
                    with Warehouse(db) as wh:
                        mutate(wh, n)
                    continue
                report(n, name, child([name, db, str(n), str(a.batch)]))


def report(n: int, name: str, r: dict[str, float]) -> None:
    note = (
        f"key check {r['check_s']:.2f}s, commit {r['commit_s']:.2f}s"
        if "check_s" in r
        else "Arrow batches -> Records"
    )
    print(
        f"| {n:,} | {name} | {int(r['rows']):,} | {r['seconds']:.2f} | "
        f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {note} |"
    )


if __name__ == "__main__":
    main()
