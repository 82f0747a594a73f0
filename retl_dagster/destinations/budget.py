"""One request budget per destination, shared by every run and every process that uses it.

A destination's limit (its `requests_per_second`, or its API's documented rate) is one bucket of
pyrate-limiter kept in a SQLite file that every process on the machine opens, with a file lock:
two runs writing to the same HubSpot portal share HubSpot's 100 requests per 10 s instead of
each taking all of it. `RETL_RATE_LIMITS` names the file (default `<data dir>/rate_limits.sqlite`);
`RETL_RATE_LIMITS=memory` keeps the budget per process. A 429 still backs off (http.py).

Why pyrate-limiter's SQLite bucket: it is the well-kept limiter the project already uses, and
SQLite with a file lock needs no server; runs on several machines need a shared file or, later,
its PostgreSQL bucket.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

from retl_dagster.common.settings import data_dir

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


def shared_limiter(destination: str, rates: list[Rate]) -> Limiter:
    """The limiter of `destination`'s budget (its bucket is keyed by the destination's name)."""
    location = budget_location()
    if location == "memory":
        return Limiter(rates)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    table = "retl_" + re.sub(r"\W", "_", destination)
    bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=location, use_file_lock=True)
    return Limiter(bucket)
