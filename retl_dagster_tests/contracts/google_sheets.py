"""The Sheets API's discovery document (sheets.v4.json, shipped by google-api-python-client) as a
strict schema for every request body and query parameter the fake Sheets receives.

`$ref`s are resolved; a property the schema does not define is refused (Google ignores some, but
a typo would then silently do nothing); types follow the discovery format (`integer` int32 /
`string` int64 digits, `number`, `boolean`, `array`, `object`, `any`) and enums are enforced.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

# The fake's request kinds -> the discovery method that serves them.
METHODS = {
    "get": "spreadsheets.get",
    "batchUpdate": "spreadsheets.batchUpdate",
    "values.get": "spreadsheets.values.get",
    "values.update": "spreadsheets.values.update",
    "values.append": "spreadsheets.values.append",
    "values.clear": "spreadsheets.values.clear",
    "values.batchUpdate": "spreadsheets.values.batchUpdate",
}


class ContractError(ValueError):
    """A request the discovery document refuses; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@functools.cache
def discovery() -> dict[str, Any]:
    docs = resources.files("googleapiclient") / "discovery_cache" / "documents"
    doc: dict[str, Any] = json.loads((docs / "sheets.v4.json").read_text(encoding="utf-8"))
    return doc


def method(name: str) -> dict[str, Any]:
    """The discovery entry of `spreadsheets.values.update` and the like."""
    node: dict[str, Any] = discovery()
    *resource_path, verb = name.split(".")
    for part in resource_path:
        node = node["resources"][part]
    found: dict[str, Any] = node["methods"][verb]
    return found


def check_schema(schema: dict[str, Any], value: Any, path: str, problems: list[str]) -> None:
    """Append to `problems` each way `value` does not fit discovery `schema`."""
    if "$ref" in schema:
        schema = discovery()["schemas"][schema["$ref"]]
    kind = schema.get("type", "any")

    def wrong(expected: str) -> None:
        problems.append(f"{path}: expected {expected}, got {type(value).__name__} {value!r:.60}")

    if kind == "any":
        return
    if kind == "object":
        if not isinstance(value, dict):
            return wrong("an object")
        props: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                if props[key].get("readOnly"):
                    problems.append(f"{path}.{key}: read-only, not settable in a request")
                check_schema(props[key], item, f"{path}.{key}", problems)
            elif extra is not None:
                check_schema(extra, item, f"{path}.{key}", problems)
            else:
                known = ", ".join(sorted(props))
                problems.append(f"{path}: unknown property '{key}' (known: {known})")
        return
    if kind == "array":
        if not isinstance(value, list):
            return wrong("an array")
        for i, item in enumerate(value):
            check_schema(schema.get("items", {}), item, f"{path}[{i}]", problems)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            wrong("a boolean")
        return
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            wrong("an integer")
        return
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong("a number")
        return
    if kind == "string":
        # int64 / uint64 are strings in discovery; Google's JSON parser takes numbers too.
        if schema.get("format") in ("int64", "uint64") and isinstance(value, int):
            return
        if not isinstance(value, str):
            return wrong("a string")
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{path}: '{value}' is not one of {', '.join(schema['enum'])}")
        return
    problems.append(f"{path}: unsupported discovery type {kind}")


def check_request(kind: str, body: Any, params: dict[str, str]) -> None:
    """Raise ContractError unless the request fits its discovery method: query parameters
    known and valid, and the body the method's request schema (none where it takes none)."""
    if kind not in METHODS:
        raise ContractError([f"no Sheets method for '{kind}'"])
    spec = method(METHODS[kind])
    problems: list[str] = []
    declared = spec.get("parameters", {}) | discovery().get("parameters", {})
    for name, value in params.items():
        if name not in declared:
            problems.append(f"query: unknown parameter '{name}'")
        elif declared[name].get("location") == "query":
            check_schema(
                {k: v for k, v in declared[name].items() if k in ("type", "enum", "format")}
                | {"type": "string"},  # every query value arrives as text
                value,
                f"query.{name}",
                problems,
            )
    request = spec.get("request")
    if request is None:
        if body not in (None, {}):
            problems.append(f"body: {METHODS[kind]} takes no request body")
    else:
        check_schema(request, body, f"body({request['$ref']})", problems)
    if problems:
        raise ContractError(problems)
