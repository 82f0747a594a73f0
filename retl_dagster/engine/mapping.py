"""Mapping stage: a diff row (model columns) -> the fields a destination receives."""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

from retl_dagster.destinations.base import Record
from retl_dagster.engine.config import SyncConfig

# Decimals with more significant digits than a float carries go out as strings, not rounded.
_FLOAT_SAFE_DIGITS = 15


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
        if len(value.as_tuple().digits) <= _FLOAT_SAFE_DIGITS:
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


class Mapper:
    """Builds Records for one sync."""

    def __init__(self, config: SyncConfig) -> None:
        self.mappings = [(m.source, m.to, m.sync_nulls) for m in config.mappings]
        self.delete_behavior = config.delete_behavior
        self.events = config.mode == "events"
        self.match_column = config.match.column if config.match else None

    def record(self, op: str, key: str, row: dict[str, Any]) -> Record:
        """`row`: the diff row; `_retl_match` and `_retl_dest_id` come from the last sync."""
        dest_id = row.get("_retl_dest_id")
        if op == "removed":
            match = row.get("_retl_match")
            if self.delete_behavior == "clear":
                # Keep the destination record, blank the fields this sync owns.
                nulls = {to: None for _, to, _ in self.mappings}
                return Record("changed", key, nulls, match, dest_id)
            return Record("removed", key, {}, match, dest_id)
        fields: dict[str, Any] = {}
        for source, to, sync_nulls in self.mappings:
            value = row.get(source)
            if value is None and not sync_nulls:
                continue
            fields[to] = to_json_value(value)
        match_value = to_json_value(row.get(self.match_column)) if self.match_column else None
        op_out = "event" if self.events else op
        return Record(op_out, key, fields, match_value, dest_id)  # type: ignore[arg-type]
