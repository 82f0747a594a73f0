"""The load stage alone, once, with its wall time and this process's CPU: for before/after pairs.

    .venv/bin/python benchmarks/load_cpu.py ROWS BATCH engine|raw

`engine`: a fresh diff of ROWS rows (side_by_side.py's model) delivered by the load stage to the
loopback receiver (benchmarks/receiver.py, its own process) through the webhook destination,
batch BATCH, concurrency 8. `raw`: side_by_side.py's raw httpx client on the same rows. Run it
at two sizes (e.g. 200000 and 1000000) and take the difference for a marginal rate; run an older
commit's engine with `PYTHONPATH=<its checkout>` from that checkout for the "before".
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import side_by_side as s  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    n, batch, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    port = s.free_port()
    url = f"http://127.0.0.1:{port}/hook"
    server = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(port)])
    try:
        s._wait(port)
        if which == "raw":
            import httpx

            records = s._records(n)
            began_cpu, began = cpu_s(), time.perf_counter()

            async def post_all() -> None:
                queue: list[list[dict[str, Any]]] = [
                    records[i : i + batch] for i in range(0, n, batch)
                ]
                async with httpx.AsyncClient(limits=httpx.Limits(max_connections=8)) as client:

                    async def worker() -> None:
                        while queue:
                            body = json.dumps({"records": queue.pop()}, separators=(",", ":"))
                            r = await client.post(
                                url, content=body, headers={"content-type": "application/json"}
                            )
                            r.raise_for_status()

                    await asyncio.gather(*(worker() for _ in range(8)))

            asyncio.run(post_all())
        else:
            from retl_dagster.destinations.impl.webhook import WebhookConfig, WebhookDestination
            from retl_dagster.engine import diff
            from retl_dagster.engine.delivery import load
            from retl_dagster.engine.warehouse import Warehouse

            cfg = s._config()
            with tempfile.TemporaryDirectory() as tmp, Warehouse(f"{tmp}/w.duckdb") as wh:
                s.make_model(wh.con, n)
                diff.compute_diff(wh, cfg, "select * from bench_model", "r1", n)
                dest = WebhookDestination(
                    "hook", WebhookConfig(url=url, batch_size=batch, concurrency=8)
                )
                began_cpu, began = cpu_s(), time.perf_counter()
                result = load(wh, cfg, dest, "r1")
                assert result.total_succeeded == n, result
                dest.close()
        wall = time.perf_counter() - began
        print(
            f"{which} rows={n} batch={batch}: wall {wall:.2f} s, {n / wall:,.0f} records/s, "
            f"CPU {cpu_s() - began_cpu:.2f} s"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
