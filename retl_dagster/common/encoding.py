"""How warehouse values become JSON, the same for every destination that speaks JSON."""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import orjson

# Decimals with more significant digits than a float carries go out as strings, not rounded.
FLOAT_SAFE_DIGITS = 15


def to_json_value(value: Any) -> Any:
    """Encode a warehouse value as JSON without losing it.

    Why not a JSON library's default hook: the choices here (exact decimals, NaN -> null, BLOB ->
    base64, MAP -> object) are our wire contract, and must hold for every destination.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if len(value.as_tuple().digits) <= FLOAT_SAFE_DIGITS:
            return int(value) if value == value.to_integral_value() else float(value)
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Arrow hands a MAP over as a list of (key, value) pairs.
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {str(k): to_json_value(v) for k, v in value}
        return [to_json_value(v) for v in value]
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of JSON-ready values (to_json_value's output), for request bodies.

    orjson: several times faster than the standard library on the hot path (a webhook batch
    is serialised once per request), and it writes UTF-8 rather than \\u escapes.
    """
    return orjson.dumps(value)


# -- event time --------------------------------------------------------------------------------
# One concept across destinations: a sync maps a model column to its destination's event-time
# field (`Destination.event_time_field`: Mixpanel `time`, Braze `time`, Segment `timestamp`,
# Meta `event_time`, Google Ads `conversion_date_time`); each client turns the datetime below
# into the form its API documents.

_MILLIS_ABOVE = 100_000_000_000
"""Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""


def parse_event_time(value: Any) -> dt.datetime:
    """A mapped event time as an aware UTC-comparable datetime.

    Takes what a warehouse column becomes on its way here: a datetime (naive ones are UTC, as a
    warehouse TIMESTAMP without time zone is by convention), a date (midnight UTC), ISO 8601
    text (with `Z` or an offset, or naive = UTC), or Unix epoch seconds / milliseconds.
    Raises ValueError with a sentence a person can act on.
    """
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"event time {value!r} is empty or not a timestamp")
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float, Decimal)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"event time {value!r} is not a finite number")
        if abs(seconds) >= _MILLIS_ABOVE:
            seconds /= 1000
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(
                f"event time {str(value)[:40]!r} is not a timestamp: map a TIMESTAMP column, "
                "ISO 8601 text or Unix epoch seconds"
            ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def event_time_or(value: Any, default: dt.datetime) -> dt.datetime:
    """A row's mapped event time, or `default` (the run's start: the same on every retry and
    replay) when the row maps or holds none. Raises ValueError as parse_event_time does."""
    if value is None or value == "":
        return default
    return parse_event_time(value)


def run_time(run_id: str) -> dt.datetime:
    """When run `run_id` started (its id begins `YYYYmmddTHHMMSSZ`): the event time of rows
    whose sync maps none. The same on every retry and replay of that run."""
    try:
        return dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return dt.datetime.now(dt.UTC)
