"""One request budget per destination, shared by every process that uses it: what the API sees
from two runs together stays within the destination's limit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

SENDER = """
import sys
from retl_dagster.destinations.http import HttpClient, HttpSettings
client = HttpClient("crm", HttpSettings(requests_per_second=4), base_url=sys.argv[1])
for _ in range(8):
    client.request("GET", "/ping")
"""


@pytest.fixture
def arrivals() -> Iterator[tuple[str, list[float]]]:
    """A server on loopback that notes when each request arrives."""
    seen: list[float] = []

    def app(environ: dict[str, object], start_response: object) -> object:
        seen.append(time.monotonic())
        return Response("ok")(environ, start_response)  # type: ignore[arg-type]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()


def busiest_second(times: list[float]) -> int:
    """The most requests the server saw within any 0.8 s (0.2 s of slack for jitter)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + 0.8) for t in times)


def two_runs(url: str, tmp_path: Path, budget: str) -> None:
    env = {**__import__("os").environ, "RETL_RATE_LIMITS": budget, "RETL_DATA_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, url], env=env) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0


def test_two_runs_share_one_destinations_budget(
    arrivals: tuple[str, list[float]], tmp_path: Path
) -> None:
    url, seen = arrivals
    two_runs(url, tmp_path, str(tmp_path / "budget.sqlite"))
    assert len(seen) == 16
    assert busiest_second(seen) <= 4  # the limit, for both runs together


def test_without_a_shared_budget_each_run_takes_the_whole_limit(
    arrivals: tuple[str, list[float]], tmp_path: Path
) -> None:
    url, seen = arrivals
    two_runs(url, tmp_path, "memory")
    assert len(seen) == 16
    assert busiest_second(seen) > 4  # what the shared budget prevents
