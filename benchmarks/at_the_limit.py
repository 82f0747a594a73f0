"""Destinations at their limit: does a sync deliver what each API's documented rate limit allows?

    python benchmarks/at_the_limit.py                          # all five; a few minutes
    python benchmarks/at_the_limit.py --only hubspot braze --rows braze=50000

Each destination's fake (retl_dagster_tests/fakes/, a real HTTP server over loopback, here in
this process, which does nothing else) enforces the API's documented limit with its rolling
window and answers over it the way the API does (429, or Salesforce's 403
REQUEST_LIMIT_EXCEEDED). The sync runs in its own process, as `retl sync` does: `run_sync` on a
real DagsterInstance, the destination's default config (plus `concurrency` where noted). The
records/s is the records the run acknowledged over the run's own duration (diff + load; process
start-up excluded); "allowed" is the limit's requests/s x the batch size used.

The fakes' process runs without Python's cyclic garbage collector (`--fake-gc` keeps it): a fake
keeps every call it was sent, and a full collection over 200,000 of them stopped the server for
100-300 ms, so the requests sent just before were counted that much late and a burst of the
next ones answered 429. No API stops like that; both the sync and the bare-client replay go
through the same fake either way.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from retl_dagster_tests.fakes.base import FakeServer  # noqa: E402
from retl_dagster_tests.fakes.braze import FakeBraze  # noqa: E402
from retl_dagster_tests.fakes.hubspot import FakeHubSpot  # noqa: E402
from retl_dagster_tests.fakes.mixpanel import FakeMixpanel  # noqa: E402
from retl_dagster_tests.fakes.salesforce import FakeSalesforce  # noqa: E402
from retl_dagster_tests.fakes.segment import FakeSegment  # noqa: E402


@dataclass
class Case:
    name: str
    fake: Callable[[], FakeServer]
    destination: str
    """YAML of the destination (`{url}`, `{extra}` filled in)."""
    sync: str
    rows: int
    batch: int
    allowed_rps: float | None
    """Requests/s the documented limit allows (None: no per-second limit)."""
    limit: str
    window: tuple[int, float] | None = None
    """(requests, seconds) of the fake's rolling window, for the fastest a run could be."""
    variants: tuple[tuple[str, str], ...] = (("default", ""),)
    """(label, extra destination YAML) of each run."""
    throttle_status: int = 429
    replay_headers: dict[str, str] | None = None
    """Headers for replaying the run's requests with a bare client (None: not replayed)."""


EIGHT = (("default (concurrency 1)", ""), ("concurrency: 8", "    concurrency: 8\n"))


COMMON = "{extra}"

CASES = [
    Case(
        "hubspot",
        lambda: FakeHubSpot("sec", rate_limit=100, window_s=10.0),
        "  d:\n    type: hubspot\n    token: {secret}\n    base_url: {url}\n" + COMMON,
        """object: deals
mode: insert
mappings:
  - {from: first, to: dealname}
  - {from: amount, to: amount}
  - {from: plan, to: dealstage}""",
        rows=25_000,
        batch=100,
        allowed_rps=10.0,
        limit="100 requests / 10 s rolling (private apps, TEN_SECONDLY_ROLLING)",
        window=(100, 10.0),
        variants=(
            ("default (the API's window)", ""),
            ("requests_per_second: 10 (as before)", "    requests_per_second: 10\n"),
        ),
    ),
    Case(
        "salesforce",
        lambda: FakeSalesforce("cid", "sec"),
        "  d:\n    type: salesforce\n    login_url: {url}\n    client_id: cid\n"
        "    client_secret: {secret}\n" + COMMON,
        """object: Contact
mode: insert
mappings:
  - {from: last, to: LastName}
  - {from: email, to: Email}
  - {from: plan, to: Plan__c}""",
        rows=300_000,
        batch=200,
        allowed_rps=None,
        limit="no per-second limit (a daily request quota), so none enforced",
        throttle_status=403,
    ),
    Case(
        "braze",
        lambda: FakeBraze("sec", rate_limit=3000, window_s=3.0),
        "  d:\n    type: braze\n    api_key: {secret}\n    base_url: {url}\n" + COMMON,
        """object: users
mode: upsert
match: {column: ext, field: external_id}
mappings:
  - {from: email, to: email}
  - {from: plan, to: plan}""",
        rows=250_000,
        batch=75,
        allowed_rps=1000.0,
        window=(3000, 3.0),
        limit="/users/track 3,000 requests / 3 s (the client's default_rps 1000)",
        variants=EIGHT,
        replay_headers={"Authorization": "Bearer sec", "Content-Type": "application/json"},
    ),
    Case(
        "mixpanel",
        lambda: FakeMixpanel(
            "sec", "sa.user", "sec", rate_limit=900, window_s=60.0, project_id="1"
        ),
        "  d:\n    type: mixpanel\n    project_token: {secret}\n"
        "    service_account_username: sa.user\n    service_account_secret: {secret}\n"
        "    project_id: '1'\n    base_url: {url}\n" + COMMON,
        """object: Plan Reviewed
mode: events
match: {column: ext, field: distinct_id}
mappings:
  - {from: email, to: email}
  - {from: plan, to: plan}""",
        rows=700_000,
        batch=2000,
        allowed_rps=15.0,
        window=(900, 60.0),
        limit="/import ~30,000 events/s (2 GB/min) rolling 1 min: 900 requests of 2,000 / 60 s",
        variants=EIGHT,
    ),
    Case(
        "segment",
        lambda: FakeSegment("sec", rate_limit=500, window_s=1.0),
        "  d:\n    type: segment\n    write_key: {secret}\n    base_url: {url}\n" + COMMON,
        """object: Plan Reviewed
mode: events
match: {column: ext, field: userId}
mappings:
  - {from: email, to: email}
  - {from: plan, to: plan}""",
        rows=250_000,
        batch=200,
        allowed_rps=500.0,
        window=(500, 1.0),
        limit="HTTP API: 500 requests/s a workspace (batch 200 default: 100,000 calls/s)",
        variants=EIGHT,
        replay_headers={
            "Authorization": "Basic " + base64.b64encode(b"sec:").decode(),
            "Content-Type": "application/json",
        },
    ),
]


def scaled(case: Case, factor: float) -> Case:
    """The case with a limit `factor` times the documented one (the fake's window holds that
    many fewer requests, and the destination is told the rate with `requests_per_second`, as
    an account on a lower tier would): for destinations whose documented limit asks more of
    this machine than a Python fake and a sync sharing two cores can give (see BENCHMARKS.md),
    it shows whether the sync keeps an API at its limit when the machine is not what binds."""
    if factor == 1.0 or case.allowed_rps is None or case.window is None:
        return case
    make = case.fake

    def fake() -> FakeServer:
        server = make()
        assert server.rate_limit is not None
        server.rate_limit = max(1, round(server.rate_limit * factor))
        return server

    rps = case.allowed_rps * factor
    setting = f"    requests_per_second: {rps:g}\n"
    return replace(
        case,
        fake=fake,
        allowed_rps=rps,
        window=(max(1, round(case.window[0] * factor)), case.window[1]),
        limit=f"{case.limit}, scaled by {factor:g}: {rps:g} requests/s",
        variants=tuple((label, extra + setting) for label, extra in case.variants),
    )


def child() -> None:
    """One sync run in this process, its YAML in the environment; prints the run's summary."""
    import dagster as dg
    from dagster.components.core.component_tree import ComponentTree

    from retl_dagster.components import Destinations, Sync
    from retl_dagster.components.references import check_references
    from retl_dagster.runner import run_sync

    context = ComponentTree.for_test().load_context
    defs = dg.Definitions.merge(
        Destinations.resolve_from_yaml(os.environ["BENCH_DESTINATIONS"]).build_defs(context),
        Sync.resolve_from_yaml(os.environ["BENCH_SYNC"]).build_defs(context),
    )
    check_references(defs)
    out = run_sync(defs, "s", dg.DagsterInstance.get(), log_level="WARNING")
    print(json.dumps(out.summary, default=str))
    sys.exit(out.exit_code)


def make_table(rows: int) -> None:
    from retl_dagster.engine.warehouse import Warehouse

    with Warehouse() as wh:
        wh.execute(
            f"""create or replace table people as
            select i as id, 'u' || i as ext, 'user' || i || '@example.com' as email,
                   case when i % 3 = 0 then 'pro' else 'free' end as plan,
                   'First' || i as first, 'Last' || i as last, (i % 1000) * 1.5 as amount
            from generate_series(1, {rows}) as t(i)"""
        )


def fastest_s(case: Case, records: int) -> float | None:
    """The least time the fake's rolling window lets these records' requests through in: a
    burst of a window's requests, then a window's more each window."""
    if case.window is None:
        return None
    per_window, seconds = case.window
    requests = -(-records // case.batch)
    return seconds * ((requests - 1) // per_window)


FAKE_GC = False
"""--fake-gc: keep the garbage collector on while a fake serves (see the module's doc)."""


@contextlib.contextmanager
def serving(case: Case) -> Iterator[FakeServer]:
    """The case's fake, serving, with the collector off unless --fake-gc."""
    if not FAKE_GC:
        gc.disable()
    try:
        with case.fake() as fake:
            yield fake
    finally:
        gc.enable()
        gc.collect()


def replay(case: Case, requests: list[tuple[str, bytes]], concurrency: int = 8) -> float:
    """Seconds a bare client (httpx's AsyncClient, `concurrency` tasks, bodies serialised
    beforehand, a throttled request sent again after 50 ms) takes to post the run's own
    requests to a fresh fake with the same limit: the fastest any client delivers these
    records through this fake on this machine, the same-run reference for the sync's rate."""
    import httpx

    headers = case.replay_headers or {}
    with serving(case) as fake:

        async def main() -> None:
            queue = list(reversed(requests))
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(base_url=fake.url, limits=limits) as client:

                async def worker() -> None:
                    while queue:
                        path, body = queue.pop()
                        while True:
                            r = await client.post(path, content=body, headers=headers)
                            if r.status_code != case.throttle_status:
                                r.raise_for_status()
                                break
                            await asyncio.sleep(0.05)

                await asyncio.gather(*(worker() for _ in range(concurrency)))

        began = time.perf_counter()
        asyncio.run(main())
        return time.perf_counter() - began


def run_case(case: Case, extra: str, rows: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"retl-limit-{case.name}-"))
    env = dict(os.environ)
    env |= {
        "DAGSTER_HOME": str(tmp / "home"),
        "RETL_DATA_DIR": str(tmp / "data"),
        "RETL_WAREHOUSE": str(tmp / "data" / "warehouse.duckdb"),
        "RETL_RATE_LIMITS": str(tmp / "data" / "rate_limits.sqlite"),
        "BENCH_SECRET": "sec",
    }
    os.environ.update(env)
    from retl_dagster.cli import ensure_dagster_home

    ensure_dagster_home()
    make_table(rows)
    with serving(case) as fake:
        env["BENCH_DESTINATIONS"] = "destinations:\n" + case.destination.format(
            url=fake.url, extra=extra, secret="'{{ env.BENCH_SECRET }}'"
        )
        env["BENCH_SYNC"] = (
            "name: s\nmodel: {table: people}\nprimary_key: id\ndestination: d\n" + case.sync
        )
        own, children = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        proc = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True
        )
        own_after, children_after = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{case.name}: the sync failed:\n{proc.stdout}\n{proc.stderr}")
        summary = json.loads(proc.stdout.splitlines()[-1])
        throttled = sum(1 for e in fake.log if e.status == case.throttle_status)
        requests = len(fake.log)
        sent = [
            (e.path, json.dumps(e.body).encode())
            for e in fake.log
            if e.method == "POST" and 200 <= e.status < 300 and e.body is not None
        ]
    seconds = float(summary["duration_s"])
    delivered = int(summary["succeeded"])
    rate = delivered / seconds
    allowed = case.allowed_rps * case.batch if case.allowed_rps else None
    return {
        "records": delivered,
        "seconds": seconds,
        "rate": rate,
        "allowed": allowed,
        "ratio": rate / allowed if allowed else None,
        "fastest": fastest_s(case, delivered),
        "throttled": throttled,
        "requests": requests,
        "fake_cpu": (own_after.ru_utime + own_after.ru_stime) - (own.ru_utime + own.ru_stime),
        "sync_cpu": (children_after.ru_utime + children_after.ru_stime)
        - (children.ru_utime + children.ru_stime),
        "sent": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--only", nargs="+", help="destinations to run (default: all)")
    parser.add_argument("--rows", nargs="+", default=[], help="NAME=ROWS overrides")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="limits as a fraction of the documented ones"
    )
    parser.add_argument(
        "--fake-gc", action="store_true", help="keep the fakes' garbage collector on"
    )
    args = parser.parse_args()
    if args.child:
        child()
        return
    global FAKE_GC
    FAKE_GC = args.fake_gc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    rows = {k: int(v) for k, v in (item.split("=") for item in args.rows)}
    print(f"{os.cpu_count()} cores; Python {sys.version.split()[0]}\n")
    for case in (scaled(c, args.scale) for c in CASES):
        if not args.only or case.name in args.only:
            print(f"- {case.name}: {case.limit}")
    print(
        "\n| destination | config | batch | records | run s | records/s "
        "| limit allows records/s | ratio | fastest the window allows s | vs fastest "
        "| 429s | requests | sync CPU s | fake CPU s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    replays: list[str] = []
    for case in (scaled(c, args.scale) for c in CASES):
        if args.only and case.name not in args.only:
            continue
        best: dict[str, Any] | None = None
        for label, extra in case.variants:
            r = run_case(case, extra, rows.get(case.name, case.rows))
            if best is None or r["rate"] > best["rate"]:
                best = r | {"label": label}
            allowed = f"{r['allowed']:,.0f}" if r["allowed"] else "n/a"
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "n/a"
            fastest = "n/a" if r["fastest"] is None else f"{r['fastest']:.0f}"
            versus = f"{r['fastest'] / r['seconds']:.2f}x" if r["fastest"] else "n/a"
            print(
                f"| {case.name} | {label} | {case.batch} | {r['records']:,} "
                f"| {r['seconds']:.2f} | {r['rate']:,.0f} | {allowed} | {ratio} "
                f"| {fastest} | {versus} "
                f"| {r['throttled']} | {r['requests']:,} | {r['sync_cpu']:.1f} "
                f"| {r['fake_cpu']:.1f} |",
                flush=True,
            )
        if case.replay_headers and best is not None:
            seconds = replay(case, best["sent"])
            raw_rate = best["records"] / seconds
            replays.append(
                f"| {case.name} | {best['records']:,} | {seconds:.2f} | {raw_rate:,.0f} "
                f"| {best['label']}: {best['rate']:,.0f} | {best['rate'] / raw_rate:.2f}x |"
            )
    if replays:
        print(
            "\nThe run's own requests replayed by a bare client (httpx AsyncClient, 8 tasks) "
            "to a fresh fake with the same limit:\n\n"
            "| destination | records | replay s | bare client records/s "
            "| sync records/s (best config) | sync vs bare client |\n"
            "|---|---:|---:|---:|---|---:|"
        )
        print("\n".join(replays))


if __name__ == "__main__":
    main()
