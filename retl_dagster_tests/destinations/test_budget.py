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

from retl_dagster_tests.harness import PG_URL, fresh_pg_database

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


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL: export RETL_TEST_PG_URL")
def test_runs_on_several_machines_share_a_budget_kept_in_postgresql(
    arrivals: tuple[str, list[float]], tmp_path: Path
) -> None:
    """With RETL_RATE_LIMITS a PostgreSQL URL the bucket is in the database, not a local file:
    run workers on different machines (each with its own disk) still share the limit."""
    url, seen = arrivals
    with fresh_pg_database() as database:
        two_runs(url, tmp_path, database)
    assert len(seen) == 16
    assert busiest_second(seen) <= 4
    assert not list(tmp_path.glob("*.sqlite"))  # nothing kept on the machine's disk


def test_without_a_shared_budget_each_run_takes_the_whole_limit(
    arrivals: tuple[str, list[float]], tmp_path: Path
) -> None:
    url, seen = arrivals
    two_runs(url, tmp_path, "memory")
    assert len(seen) == 16
    assert busiest_second(seen) > 4  # what the shared budget prevents


QUOTA_SENDER = """
import sys
from retl_dagster.destinations import http
from retl_dagster.destinations.http import BudgetSpent, HttpClient, HttpSettings
http.MAX_BUDGET_WAIT_S = 0.5
client = HttpClient("crm", HttpSettings(requests_per_day=5), base_url=sys.argv[1])
sent = 0
try:
    for _ in range(int(sys.argv[2])):
        client.request("GET", "/ping")
        sent += 1
except BudgetSpent as exc:
    print(sent, exc, sep="\\n")
    sys.exit(3)
print(sent)
"""


def test_a_daily_quota_is_shared_and_a_spent_one_stops_the_run_saying_so(
    arrivals: tuple[str, list[float]], tmp_path: Path
) -> None:
    url, seen = arrivals
    env = {
        **__import__("os").environ,
        "RETL_RATE_LIMITS": str(tmp_path / "budget.sqlite"),
        "RETL_DATA_DIR": str(tmp_path),
    }

    def run(n: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", QUOTA_SENDER, url, str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run(3)
    assert first.returncode == 0 and first.stdout.strip() == "3"
    second = run(3)  # another run, later: 2 of the day's 5 are left
    assert second.returncode == 3, second.stderr
    sent, message = second.stdout.split("\n", 1)
    assert sent == "2" and len(seen) == 5
    assert "destination 'crm'" in message and "daily quota (requests_per_day: 5)" in message
    assert "Fix:" in message


@pytest.mark.parametrize(
    ("answers", "slots"),
    [
        # A first 429 is retried with the slot the refused request took: the API did not
        # count it, and a second slot would leave the budget one request short for it.
        ([429, 200], 1),
        # A second 429 in a row backs off and takes a slot again.
        ([429, 429, 200], 2),
        # So does a retry after a wait the API asked for.
        (["429 Retry-After", 200], 2),
        # And any other transient failure.
        ([503, 200], 2),
    ],
)
def test_a_first_429_is_retried_without_another_request_from_the_budget(
    answers: list[int | str], slots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retl_dagster.destinations.http import HttpClient, HttpSettings

    monkeypatch.setenv("RETL_RATE_LIMITS", "memory")
    queue = list(answers)

    def app(environ: dict[str, object], start_response: object) -> object:
        answer = queue.pop(0)
        if answer == "429 Retry-After":
            response = Response("slow down", status=429, headers={"Retry-After": "0"})
        else:
            response = Response("ok" if answer == 200 else "no", status=int(answer))
        return response(environ, start_response)  # type: ignore[arg-type]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = HttpSettings(requests_per_second=50, backoff_initial_s=0.01)
        client = HttpClient("crm", settings, base_url=f"http://127.0.0.1:{server.server_port}")
        assert client.limiter is not None
        taken = 0
        acquire = client.limiter.try_acquire

        def counted(name: str, timeout: float) -> bool:
            nonlocal taken
            taken += 1
            return acquire(name, timeout)

        monkeypatch.setattr(client.limiter, "try_acquire", counted)
        assert client.request("GET", "/ping").status_code == 200
    finally:
        server.shutdown()
    assert not queue and client.attempts == len(answers)
    assert taken == slots
