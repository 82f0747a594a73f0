"""Mapping stage: a diff row (model columns) -> the fields a destination receives."""

from __future__ import annotations

from typing import Any

from retl_dagster.destinations.base import Record
from retl_dagster.destinations.encoding import to_json_value
from retl_dagster.engine.config import SyncConfig


def _as_is(value: Any) -> Any:
    return value


class Mapper:
    """Builds Records for one sync."""

    def __init__(self, config: SyncConfig, encode: bool = True) -> None:
        self.encode = to_json_value if encode else _as_is
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
            fields[to] = self.encode(value)
        match_value = self.encode(row.get(self.match_column)) if self.match_column else None
        op_out = "event" if self.events else op
        return Record(op_out, key, fields, match_value, dest_id)  # type: ignore[arg-type]
