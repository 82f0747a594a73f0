"""One request budget per destination, shared by every run and every process that uses it.

A destination's limit (its `requests_per_second`, or its API's documented rate) is one bucket of
pyrate-limiter kept in a SQLite file that every process on the machine opens, with a file lock:
two runs writing to the same HubSpot portal share HubSpot's 100 requests per 10 s instead of
each taking all of it. `RETL_RATE_LIMITS` names the file (default `<data dir>/rate_limits.sqlite`)
or a PostgreSQL URL;
`RETL_RATE_LIMITS=memory` keeps the budget per process. A 429 still backs off (http.py).

Why pyrate-limiter's buckets: it is the well-kept limiter the project already uses. SQLite with a
file lock needs no server and serves one machine; a deployment whose runs start on several
machines (the Docker or Kubernetes run launcher) sets `RETL_RATE_LIMITS` to a PostgreSQL URL
(e.g. Dagster's own database) and gets pyrate-limiter's PostgreSQL bucket, shared by them all.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from psycopg_pool import ConnectionPool
from pyrate_limiter import Duration, Limiter, PostgresBucket, Rate, SQLiteBucket

from retl_dagster.common.settings import data_dir, is_url

RATE_LIMITS_ENV = "RETL_RATE_LIMITS"


def rates_for(
    rps: float | None, window: Rate | None = None, per_day: int | None = None
) -> list[Rate]:
    """One budget's rates, shortest window first: `rps` (whole requests per second; below 1/s
    as 1 per N seconds) or else the API's documented `window` (e.g. HubSpot's 100 per 10 s),
    and a daily quota."""
    rates = []
    if rps is not None and rps >= 1:
        rates.append(Rate(max(1, int(rps)), Duration.SECOND))
    elif rps is not None:
        rates.append(Rate(1, int(Duration.SECOND * (1 / rps))))
    elif window is not None:
        rates.append(window)
    if per_day:
        rates.append(Rate(per_day, Duration.DAY))
    return rates


def budget_location() -> str:
    return os.environ.get(RATE_LIMITS_ENV) or str(data_dir() / "rate_limits.sqlite")


_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _pg_pool(url: str) -> ConnectionPool:
    """One small connection pool per process for a PostgreSQL budget (psycopg's own pool, which
    pyrate-limiter's bucket takes)."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
            pool = _pools[url] = ConnectionPool(conninfo, min_size=1, max_size=4, open=True)
        return pool


_turns: dict[str, threading.Lock] = {}


class SharedLimiter:
    """A destination's limiter, whose callers in this process take turns on a thread lock
    before its bucket's own lock. The SQLite bucket's file lock is taken by polling (every 50
    ms with filelock), so 8 threads polling it kept Braze at concurrency 8 to 0.4x its rate at
    concurrency 1 (BENCHMARKS.md, "Destinations at their limit"); waiting on a thread lock
    costs nothing, and the budget is still shared with other processes through the bucket."""

    def __init__(self, limiter: Limiter, key: str | None) -> None:
        """`key`: the bucket's, shared by every limiter of it in this process (None: a bucket
        of this limiter's own)."""
        self.limiter = limiter
        if key is None:
            self.turn = threading.Lock()
            return
        with _pools_lock:
            self.turn = _turns.setdefault(key, threading.Lock())

    def try_acquire(self, name: str, timeout: float) -> bool:
        """Take one request from the budget, waiting up to `timeout` s for it, the wait for
        this process's turn included (so a spent budget fails every thread in `timeout`, not
        one after another)."""
        deadline = time.monotonic() + timeout
        if not self.turn.acquire(timeout=timeout):
            return False
        try:
            left = max(0.0, deadline - time.monotonic())
            return bool(self.limiter.try_acquire(name, timeout=left))
        finally:
            self.turn.release()


def shared_limiter(destination: str, rates: list[Rate]) -> SharedLimiter:
    """The limiter of `destination`'s budget (its bucket is keyed by the destination's name):
    in a SQLite file every process on the machine shares, or, with a PostgreSQL URL, in that
    database, shared by runs on every machine (a deployment's run workers)."""
    location = budget_location()
    table = "retl_" + re.sub(r"\W", "_", destination)
    key = f"{location}\x1f{table}"
    if location == "memory":
        return SharedLimiter(Limiter(rates), None)
    if is_url(location):
        return SharedLimiter(Limiter(PostgresBucket(_pg_pool(location), table, rates)), key)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=location, use_file_lock=True)
    return SharedLimiter(Limiter(bucket), key)
