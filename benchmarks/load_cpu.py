"""The delivery contenders of side_by_side.py once, with their wall time and CPU: for
before/after pairs of the load stage.

    .venv/bin/python benchmarks/load_cpu.py ROWS BATCH engine|raw

`engine`: a fresh diff of ROWS rows delivered by the load stage to the loopback receiver
(benchmarks/receiver.py, its own process) through the webhook destination, batch BATCH,
concurrency 8 (side_by_side.py's `task_engine_load`). `raw`: its raw httpx client on the same
rows (`task_raw_httpx`). Run it at two sizes (e.g. 200000 and 1000000) and take the difference
for a marginal rate; run an older commit's engine with `PYTHONPATH=<its checkout>` from that
checkout for the "before".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import side_by_side as s  # noqa: E402


def main() -> None:
    n, batch, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    port = s.free_port()
    url = f"http://127.0.0.1:{port}/hook"
    server = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(port)])
    try:
        s._wait(port)
        task = s.task_raw_httpx if which == "raw" else s.task_engine_load
        out = task(url, n, batch, 8)
        print(
            f"{which} rows={n} batch={batch}: wall {out['seconds']:.2f} s, "
            f"{n / out['seconds']:,.0f} records/s, CPU {out['cpu_s']:.2f} s"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
