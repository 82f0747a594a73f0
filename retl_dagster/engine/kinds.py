"""Mapping kinds: what feeds one destination field, as one tagged union.

A mapping in YAML is a column (`from`), a constant (`static`), an object column sent as is
(`object: select`), an object built from columns (`object: {property: path}`), a list column
sent as is (`array: select`) or with chosen properties of each element (`array: {...}`).
`kind_of` decides which, once, when the declaration is read; everything a kind does (the
columns it reads, its value for a row, whether it maps column-wise, its warehouse type, what
its hash covers) lives in its own class below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from retl_dagster.common.errors import invalid


def as_object(value: Any) -> Any:
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
        value = as_object(value)
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True)
class _Kind:
    tag: ClassVar[str]
    plain: ClassVar[bool] = False
    """Maps a whole Arrow column at once (a column or a constant), no per-row Python."""

    def columns(self) -> list[str]:
        """Model columns this kind reads."""
        return []

    def value(self, row: dict[str, Any]) -> Any:
        raise NotImplementedError

    def warehouse_type(self, types: dict[str, str]) -> str:
        """The warehouse type of the field (lower-cased column -> type); built values: JSON."""
        return "JSON"

    def hash_shape(self) -> str:
        """What the hash covers besides column values, after the field name: `:<object>:<array>`
        as the YAML spells them, so changing the mapping itself resends. Must stay as written:
        the state's hashes are built from it."""
        return "::"


@dataclass(frozen=True)
class Column(_Kind):
    source: str
    tag: ClassVar[str] = "column"
    plain: ClassVar[bool] = True

    def columns(self) -> list[str]:
        return [self.source]

    def value(self, row: dict[str, Any]) -> Any:
        return row.get(self.source)

    def warehouse_type(self, types: dict[str, str]) -> str:
        return types[self.source.lower()]


@dataclass(frozen=True)
class Static(_Kind):
    constant: str | int | float | bool
    tag: ClassVar[str] = "static"
    plain: ClassVar[bool] = True

    def value(self, row: dict[str, Any]) -> Any:
        return self.constant

    def warehouse_type(self, types: dict[str, str]) -> str:
        return {bool: "BOOLEAN", int: "BIGINT", float: "DOUBLE"}.get(type(self.constant), "VARCHAR")


@dataclass(frozen=True)
class ObjectSelect(_Kind):
    source: str
    tag: ClassVar[str] = "object_select"

    def columns(self) -> list[str]:
        return [self.source]

    def value(self, row: dict[str, Any]) -> Any:
        return as_object(row.get(self.source))

    def hash_shape(self) -> str:
        return ":select:"


@dataclass(frozen=True)
class ObjectBuild(_Kind):
    properties: dict[str, str]
    """property -> path (`column` or `column.property`)."""
    tag: ClassVar[str] = "object_build"

    def columns(self) -> list[str]:
        return list(dict.fromkeys(p.split(".")[0] for p in self.properties.values()))

    def value(self, row: dict[str, Any]) -> Any:
        return {prop: get_path(row, path) for prop, path in self.properties.items()}

    def hash_shape(self) -> str:
        return f":{self.properties}:"


@dataclass(frozen=True)
class ArraySelect(_Kind):
    source: str
    tag: ClassVar[str] = "array_select"

    def columns(self) -> list[str]:
        return [self.source]

    def value(self, row: dict[str, Any]) -> Any:
        return as_object(row.get(self.source))

    def warehouse_type(self, types: dict[str, str]) -> str:
        return types[self.source.lower()]

    def hash_shape(self) -> str:
        return "::select"


@dataclass(frozen=True)
class ArrayPick(_Kind):
    source: str
    properties: dict[str, str]
    """property -> element property."""
    tag: ClassVar[str] = "array_pick"

    def columns(self) -> list[str]:
        return [self.source]

    def value(self, row: dict[str, Any]) -> Any:
        elements = as_object(row.get(self.source))
        if not isinstance(elements, list):
            return elements
        picked = []
        for element in elements:
            element = as_object(element)
            if isinstance(element, dict):
                # A LIST of STRUCTs gives every element every field, null where it has none:
                # a null property counts as missing.
                picked.append(
                    {
                        p: element[src]
                        for p, src in self.properties.items()
                        if element.get(src) is not None
                    }
                )
        return picked

    def hash_shape(self) -> str:
        return f"::{self.properties}"


MappingKind = Column | Static | ObjectSelect | ObjectBuild | ArraySelect | ArrayPick
KindTag = Literal["column", "static", "object_select", "object_build", "array_select", "array_pick"]


def kind_of(
    source: str | None,
    static: str | int | float | bool | None,
    object_: Literal["select"] | dict[str, str] | None,
    array: Literal["select"] | dict[str, str] | None,
    to: str,
) -> MappingKind:
    """The one kind a mapping's keys declare; ValueError (a sentence) when they declare none
    or several."""
    feeds = {"from": source is not None, "static": static is not None}
    feeds["object"] = isinstance(object_, dict)
    if sum(feeds.values()) != 1:
        given = ", ".join(n for n, f in feeds.items() if f) or "none"
        raise invalid(
            f"mapping to '{to}' needs exactly one of `from`, `static` or an "
            f"`object: {{property: column}}` (got {given})",
            "give it one source, e.g. `{from: email, to: email}`",
        )
    if (object_ == "select" or array is not None) and source is None:
        raise invalid(
            f"mapping to '{to}': object/array select needs `from`",
            "name the STRUCT / JSON / LIST column with `from:`",
        )
    if object_ is not None and array is not None:
        raise invalid(f"mapping to '{to}' sets both `object` and `array`", "keep one of them")
    if static is not None:
        return Static(static)
    if isinstance(object_, dict):
        return ObjectBuild(dict(object_))
    assert source is not None
    if object_ == "select":
        return ObjectSelect(source)
    if array == "select":
        return ArraySelect(source)
    if isinstance(array, dict):
        return ArrayPick(source, dict(array))
    return Column(source)
