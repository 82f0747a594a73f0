"""How warehouse values become JSON, the same for every destination that speaks JSON."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

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


# -- the same encoding, in DuckDB SQL -------------------------------------------------------
# The load's fast path (engine.mapping.FieldsEncoder) has DuckDB write each row's fields as JSON
# over the Arrow batch, instead of Python building a dict per row: several times cheaper, and the
# hot path of a webhook load. Two encoders of one contract, on purpose: to_json_value covers every
# type; the SQL below covers the plain column types and gives None for the rest (the caller then
# takes the Python path). A parity test holds the two to the same JSON values.

_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z", "GMT", "Etc/GMT", "utc"})
_PLAIN_SCALE = 21
"""str(Decimal) writes a value of more digits than a float carries in plain notation (as
DuckDB does) up to this scale; past it, in scientific notation."""
_TIMESTAMP_UNITS = frozenset({"us"})  # DuckDB overflows converting s or ms near year 1


def _iso_datetime_sql(column: str) -> str:
    """datetime.isoformat() of a TIMESTAMP (UTC for a TIMESTAMPTZ), without quotes: the year
    zero-padded to four digits, microseconds only where there are some."""
    return (
        f"lpad(year({column})::varchar, 4, '0') || strftime({column}, '-%m-%dT%H:%M:%S') || "
        f"case when epoch_us({column}) % 1000000 <> 0 then strftime({column}, '.%f') else '' end"
    )


def json_text_sql(column: str, type_: pa.DataType) -> str | None:
    """DuckDB SQL of the JSON text `dumps(to_json_value(v))` gives each value of quoted column
    `column`, an Arrow column of type `type_` (NULL where the value is null); None where only
    to_json_value can encode the type. It reads the same whether `column` is the Arrow
    column registered in DuckDB or the DuckDB column it was read from: a text column is cast to
    VARCHAR first (a JSON or UUID column goes out as the string Arrow carries), a TIMESTAMPTZ
    is converted to UTC (whatever the session's TimeZone)."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return f"to_json({column}::varchar)::varchar"
    if pa.types.is_integer(type_) or pa.types.is_boolean(type_):
        return f"to_json({column})::varchar"
    if pa.types.is_floating(type_) and not pa.types.is_float16(type_):
        # NaN and Infinity are not JSON; a float32 goes out as the double Python reads.
        return f"case when isfinite({column}) then to_json({column}::double)::varchar end"
    if pa.types.is_decimal(type_) and type_.bit_width == 128 and type_.scale <= _PLAIN_SCALE:
        # Up to FLOAT_SAFE_DIGITS digits (an unscaled value below 10**15): integral values are
        # integers, others the correctly rounded double; more digits go out as text.
        number = (
            f"case when {column} = trunc({column}) then {column}::hugeint::varchar "
            f"else to_json({column}::double)::varchar end"
        )
        if type_.precision <= FLOAT_SAFE_DIGITS:
            return number
        if type_.scale >= type_.precision:
            return None  # DuckDB writes these without the leading zero (".5")
        bound = f"{Decimal(10) ** (FLOAT_SAFE_DIGITS - type_.scale):f}"
        text = f"to_json({column}::varchar)::varchar"
        return f"case when abs({column}) < {bound} then {number} else {text} end"
    if pa.types.is_timestamp(type_) and type_.unit in _TIMESTAMP_UNITS:
        if type_.tz is None:
            return f"'\"' || {_iso_datetime_sql(column)} || '\"'"
        if type_.tz in _UTC_ZONES:
            utc = f"timezone('UTC', {column})"
            return f"'\"' || {_iso_datetime_sql(utc)} || '+00:00\"'"
        return None
    if pa.types.is_date(type_):
        return (
            f"'\"' || lpad(year({column})::varchar, 4, '0') || strftime({column}, '-%m-%d') || '\"'"
        )
    return None


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


@functools.lru_cache(maxsize=64)
def run_time(run_id: str) -> dt.datetime:
    """When run `run_id` started (its id begins `YYYYmmddTHHMMSSZ`): the event time of rows
    whose sync maps none. The same on every retry and replay of that run. Cached: destinations
    ask once a record, and strptime was a fifth of a Segment load's CPU."""
    try:
        return dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return dt.datetime.now(dt.UTC)
