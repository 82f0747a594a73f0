"""Mapping stage: a diff row (model columns) -> the fields a destination receives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from retl_dagster.destinations.base import Record
from retl_dagster.destinations.encoding import to_json_value
from retl_dagster.engine.config import FieldMapping, SyncConfig


def _as_is(value: Any) -> Any:
    return value


def _as_object(value: Any) -> Any:
    """A STRUCT arrives as a dict, a MAP as (key, value) pairs, a JSON column as text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(x, tuple) and len(x) == 2 for x in value)
    ):
        return dict(value)
    return value


def get_path(row: dict[str, Any], path: str) -> Any:
    """`column` or `column.property.property`; None where any step is missing."""
    head, *rest = path.split(".")
    value: Any = row.get(head)
    for part in rest:
        value = _as_object(value)
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _field_value(m: FieldMapping, row: dict[str, Any]) -> Any:
    if m.static is not None:
        return m.static
    if isinstance(m.object, dict):
        return {prop: get_path(row, path) for prop, path in m.object.items()}
    assert m.source is not None
    value = row.get(m.source)
    if m.object == "select":
        return _as_object(value)
    if isinstance(m.array, dict):
        elements = _as_object(value)
        if not isinstance(elements, list):
            return None if elements is None else elements
        picked = []
        for element in elements:
            element = _as_object(element)
            if isinstance(element, dict):
                # A LIST of STRUCTs gives every element every field, null where it has none:
                # a null property counts as missing.
                picked.append(
                    {p: element[src] for p, src in m.array.items() if element.get(src) is not None}
                )
        return picked
    if m.array == "select":
        return _as_object(value)
    return value


class Mapper:
    """Builds Records for one sync."""

    def __init__(self, config: SyncConfig, encode: bool = True, accepts_nulls: bool = True) -> None:
        self.encode: Callable[[Any], Any] = to_json_value if encode else _as_is
        self.mappings = config.mappings
        # A destination that refuses nulls gets none: the field is left alone instead.
        self.sync_nulls = {m.to: m.sync_nulls and accepts_nulls for m in config.mappings}
        self.delete_behavior = config.delete_behavior
        self.events = config.mode == "events"
        self.match_column = config.match.column if config.match else None

    def fields(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.mappings:
            value = _field_value(m, row)
            if value is None and not self.sync_nulls[m.to]:
                continue
            out[m.to] = self.encode(value)
        return out

    def record(self, op: str, key: str, row: dict[str, Any]) -> Record:
        """`row`: the diff row; `_retl_match` and `_retl_dest_id` come from the last sync."""
        dest_id = row.get("_retl_dest_id")
        if op == "removed":
            match = row.get("_retl_match")
            if self.delete_behavior == "clear":
                # Keep the destination record, blank the fields this sync owns.
                nulls = {m.to: None for m in self.mappings}
                return Record("changed", key, nulls, match, dest_id)
            return Record("removed", key, {}, match, dest_id)
        match_value = self.encode(row.get(self.match_column)) if self.match_column else None
        op_out = "event" if self.events else op
        return Record(op_out, key, self.fields(row), match_value, dest_id)  # type: ignore[arg-type]
