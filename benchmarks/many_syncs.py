"""Many syncs in one deployment: do they deliver side by side, and do they keep a shared budget?

    python benchmarks/many_syncs.py                       # DuckDB warehouse; ~3 min
    python benchmarks/many_syncs.py --warehouse postgresql+psycopg://retl:retl@127.0.0.1/retl_bench
    python benchmarks/many_syncs.py --parts budget --rps 20

`side_by_side`: 1, 2, 4 and 8 syncs, each to its own slow receiver (`receiver.py`, answering
each request after DELAY_MS), each in its own process (as a deployment runs each run in its own
worker) on one Dagster instance (retl's: pools and run queue) and one warehouse. Reported: the
wall time until all are done, against one sync alone in the same run (1.0x: nothing serialises
them; Nx: they ran one after another).

`budget`: two syncs to ONE destination whose `requests_per_second` is RPS, each in its own
process, against one alone: the requests per second the receiver saw, against the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent

DESTINATION = """
  d{i}:
    type: webhook
    url: {url}
    batch_size: {batch}
    concurrency: 1
    backoff_initial_s: 0.05
{extra}"""

SYNC = """
name: {name}
model: {{table: {table}}}
primary_key: id
destination: {destination}
mode: upsert
mappings:
  - {{from: email, to: email}}
  - {{from: plan, to: plan}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(delay_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(port), str(delay_ms)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/count", timeout=1)
            return proc, url + "/hook"
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def count(url: str) -> int:
    return int(httpx.get(url.replace("/hook", "/count")).json()["requests"])


def child(args: argparse.Namespace) -> None:
    """One sync run in this process: `--child NAME TABLE DESTINATION` with the YAML in env."""
    import dagster as dg
    from dagster.components.core.component_tree import ComponentTree

    from retl_dagster.components import Destinations, Sync
    from retl_dagster.components.references import check_references
    from retl_dagster.runner import run_sync

    name, table, destination = args.child
    context = ComponentTree.for_test().load_context
    defs = dg.Definitions.merge(
        Destinations.resolve_from_yaml(os.environ["BENCH_DESTINATIONS"]).build_defs(context),
        Sync.resolve_from_yaml(
            SYNC.format(name=name, table=table, destination=destination)
        ).build_defs(context),
    )
    check_references(defs)
    out = run_sync(defs, name, dg.DagsterInstance.get(), log_level="WARNING")
    print(json.dumps(out.summary, default=str))
    sys.exit(out.exit_code)


def make_tables(prefix: str, n_tables: int, rows: int) -> None:
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse() as wh:
        for i in range(n_tables):
            wh.execute(
                f"""create table if not exists {prefix}{i} as
                select i as id, 'user' || i || '@example.com' as email,
                       case when i % 3 = 0 then 'pro' else 'free' end as plan
                from generate_series(1, {rows}) as t(i)"""
            )
    # Open no connection from here on: the syncs' processes have the warehouse to themselves.


def run_syncs(
    syncs: list[tuple[str, str, str]], destinations: str, env: dict[str, str]
) -> tuple[float, list[dict[str, Any]]]:
    """Start every sync's process at once; wall seconds until the last one is done."""
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", *sync],
            env={**env, "BENCH_DESTINATIONS": destinations},
            stdout=subprocess.PIPE,
            text=True,
        )
        for sync in syncs
    ]
    summaries = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a sync failed: {out}")
        summaries.append(json.loads(out.splitlines()[-1]))
    return time.monotonic() - started, summaries


def side_by_side(args: argparse.Namespace, env: dict[str, str]) -> None:
    receivers = [start_receiver(args.delay_ms) for _ in range(max(args.counts))]
    try:
        destinations = "destinations:" + "".join(
            DESTINATION.format(i=i, url=url, batch=args.batch, extra="")
            for i, (_, url) in enumerate(receivers)
        )
        batches = -(-args.rows // args.batch)
        print(
            f"\n{args.rows} rows a sync, batch {args.batch}, one request in flight, receiver "
            f"{args.delay_ms} ms a request: {batches} requests, at least "
            f"{batches * args.delay_ms / 1000:.1f} s of delivery per sync\n"
        )
        print("| syncs at once | wall s | vs one alone | slowest run s | records delivered |")
        print("|---:|---:|---:|---:|---:|")
        alone = None
        for n in args.counts:
            syncs = [(f"s{n}_{i}", f"m{i}", f"d{i}") for i in range(n)]
            wall, summaries = run_syncs(syncs, destinations, env)
            alone = alone or wall
            slowest = max(float(s["duration_s"]) for s in summaries)
            delivered = sum(int(s["succeeded"]) for s in summaries)
            print(f"| {n} | {wall:.2f} | {wall / alone:.2f}x | {slowest:.2f} | {delivered:,} |")
    finally:
        for proc, _ in receivers:
            proc.terminate()


def budget(args: argparse.Namespace, env: dict[str, str]) -> None:
    proc, url = start_receiver(0)
    try:
        extra = f"    requests_per_second: {args.rps}\n"
        destinations = "destinations:" + DESTINATION.format(
            i="shared", url=url, batch=args.budget_batch, extra=extra
        )
        requests = -(-args.budget_rows // args.budget_batch)
        print(
            f"\nOne destination, requests_per_second {args.rps}; {args.budget_rows} rows a sync, "
            f"batch {args.budget_batch}: {requests} requests a sync\n"
        )
        print("| syncs to the one destination | requests | wall s | requests/s seen | vs budget |")
        print("|---:|---:|---:|---:|---:|")
        for n in (1, 2):
            before = count(url)
            syncs = [(f"b{n}_{i}", f"b{i}", "dshared") for i in range(n)]
            _, summaries = run_syncs(syncs, destinations, env)
            sent = count(url) - before
            # The runs' own delivery windows (start-up excluded): the slowest run's duration.
            window = max(float(s["duration_s"]) for s in summaries)
            rate = sent / window
            print(f"| {n} | {sent} | {window:.2f} | {rate:.1f} | {rate / args.rps:.2f}x |")
    finally:
        proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--parts", default="side_by_side,budget")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--rps", type=float, default=20)
    parser.add_argument("--budget-rows", type=int, default=2000)
    parser.add_argument("--budget-batch", type=int, default=10)
    parser.add_argument("--warehouse", help="a PostgreSQL URL (default: a DuckDB file)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from retl_dagster.cli import ensure_dagster_home

    tmp = Path(tempfile.mkdtemp(prefix="retl-many-"))
    os.environ["DAGSTER_HOME"] = str(tmp / "home")
    os.environ["RETL_DATA_DIR"] = str(tmp / "data")
    os.environ["RETL_WAREHOUSE"] = args.warehouse or str(tmp / "data" / "warehouse.duckdb")
    os.environ["RETL_RATE_LIMITS"] = str(tmp / "data" / "rate_limits.sqlite")
    ensure_dagster_home()  # retl's instance: pools, run queue
    make_tables("m", max(args.counts), args.rows)
    make_tables("b", 2, args.budget_rows)
    print(f"warehouse: {'PostgreSQL' if args.warehouse else 'DuckDB'}; {os.cpu_count()} cores")
    env = dict(os.environ)
    if "side_by_side" in args.parts:
        side_by_side(args, env)
    if "budget" in args.parts:
        budget(args, env)


if __name__ == "__main__":
    main()
