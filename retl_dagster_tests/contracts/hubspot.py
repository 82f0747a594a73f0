"""HubSpot's own request models (hubspot-api-client) as a contract for every batch request body.

A body is rebuilt, key by key, into the SDK model of its endpoint with the SDK's client-side
validation on (required fields, enums), while this module checks what the SDK's constructors do
not: unknown keys (against each model's `attribute_map`) and the JSON type of every value
(against `openapi_types`: `properties` is `dict[str, str]`, so a number, boolean or object as a
property value is refused). Finally the SDK's own serializer must give back the body as sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import re
from types import ModuleType
from typing import Any

# The batch endpoint's request model, per action (/crm/v3/objects/{type}/batch/{action}).
ACTION_MODELS = {
    "create": "BatchInputSimplePublicObjectBatchInputForCreate",
    "update": "BatchInputSimplePublicObjectBatchInput",
    "upsert": "BatchInputSimplePublicObjectBatchInputUpsert",
    "read": "BatchReadInputSimplePublicObjectId",
    "archive": "BatchInputSimplePublicObjectId",
}
# Standard objects have their own SDK package; custom objects use the generic one.
OBJECT_PACKAGES = {
    "contacts": "hubspot.crm.contacts",
    "companies": "hubspot.crm.companies",
    "deals": "hubspot.crm.deals",
}
GENERIC_PACKAGE = "hubspot.crm.objects"
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict[\[(]str, (.+)[\])]$")


class ContractError(ValueError):
    """A request body HubSpot's models refuse; lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@functools.cache
def _package(object_type: str) -> tuple[ModuleType, Any, Any]:
    """(models module, a Configuration with client-side validation on, an ApiClient)."""
    name = OBJECT_PACKAGES.get(object_type, GENERIC_PACKAGE)
    models = importlib.import_module(f"{name}.models")
    configuration = importlib.import_module(f"{name}.configuration").Configuration()
    configuration.client_side_validation = True
    client = importlib.import_module(f"{name}.api_client").ApiClient(configuration)
    return models, configuration, client


def _build(
    models: ModuleType, config: Any, type_name: str, value: Any, path: str, problems: list[str]
) -> Any:
    """`value` (decoded JSON) as the SDK type `type_name`, appending what does not fit."""

    def wrong(expected: str) -> None:
        problems.append(f"{path}: expected {expected}, got {type(value).__name__} {value!r:.60}")

    if (m := _LIST.match(type_name)) is not None:
        if not isinstance(value, list):
            wrong("an array")
            return None
        return [
            _build(models, config, m.group(1), v, f"{path}[{i}]", problems)
            for i, v in enumerate(value)
        ]
    if (m := _DICT.match(type_name)) is not None:
        if not isinstance(value, dict):
            wrong("an object")
            return None
        return {
            k: _build(models, config, m.group(1), v, f"{path}.{k}", problems)
            for k, v in value.items()
        }
    if type_name == "str":
        if not isinstance(value, str):
            wrong("a string")
        return value
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            wrong("an integer")
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong("a number")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            wrong("a boolean")
        return value
    if type_name in ("datetime", "date"):
        try:
            return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            wrong(f"an ISO 8601 {type_name}")
            return None
    if type_name == "object":
        return value
    cls = getattr(models, type_name)
    if not isinstance(value, dict):
        wrong(f"a {type_name} object")
        return None
    by_key = {v: k for k, v in cls.attribute_map.items()}
    for key in value:
        if key not in by_key:
            problems.append(
                f"{path}: unknown key '{key}' for {type_name} (known: {', '.join(sorted(by_key))})"
            )
    kwargs = {
        by_key[k]: _build(models, config, cls.openapi_types[by_key[k]], v, f"{path}.{k}", problems)
        for k, v in value.items()
        if k in by_key
    }
    try:
        return cls(**kwargs, local_vars_configuration=config)
    except (ValueError, TypeError) as exc:  # the SDK's required-field and enum checks
        problems.append(f"{path}: {type_name}: {exc}")
        return None


def check_batch_request(object_type: str, action: str, body: Any) -> None:
    """Raise ContractError unless `body` is a valid request of batch/`action` for
    `object_type`, as HubSpot's SDK models define it."""
    if action not in ACTION_MODELS:
        raise ContractError([f"no batch endpoint '{action}'"])
    models, config, client = _package(object_type)
    problems: list[str] = []
    model = _build(models, config, ACTION_MODELS[action], body, "body", problems)
    if problems:
        raise ContractError(problems)
    # The SDK's own serializer must give back exactly what was sent (no value coerced).
    again = client.sanitize_for_serialization(model)
    if again != body:
        raise ContractError([f"body: the SDK serializes it as {again!r:.200}, not as sent"])
