"""Klaviyo's own request models (the `klaviyo-api` SDK, OpenAPI-generated pydantic models of
revision 2026-10-15) as a contract for every request body the fake receives.

A body is walked against its endpoint's SDK model: every key must be one the model declares (by
its JSON alias; the SDK's `from_dict` silently drops unknown keys, Klaviyo answers them with a
400), then the SDK's `from_dict` validates it with the models' own strict types, enums and
required fields (`StrictStr` identifiers, `properties` an object, `metric.data.attributes.name`
required...). The limits the models cannot express come from the endpoints' reference text
(quoted in the SDK's docstrings): 10,000 profiles a bulk import, 1,000 events a bulk create, 1,000
profiles a list-membership call, each profile with an identifier.
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import pydantic
from openapi_client.models import (
    EventsBulkCreateJob,
    ListMembersAddQuery,
    ListMembersDeleteQuery,
    ProfileImportJobCreateQuery,
)

ENDPOINT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "POST /api/profile-bulk-import-jobs": ProfileImportJobCreateQuery,
    "POST /api/event-bulk-create-jobs": EventsBulkCreateJob,
    "POST /api/lists/{id}/relationships/profiles": ListMembersAddQuery,
    "DELETE /api/lists/{id}/relationships/profiles": ListMembersDeleteQuery,
}
LIMITS = {
    "POST /api/profile-bulk-import-jobs": 10_000,
    "POST /api/event-bulk-create-jobs": 1_000,
    "POST /api/lists/{id}/relationships/profiles": 1_000,
    "DELETE /api/lists/{id}/relationships/profiles": 1_000,
}
IDENTIFIERS = ("email", "phone_number", "external_id")


class ContractError(ValueError):
    """A request body Klaviyo's models refuse; lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    """The SDK model classes an annotation holds (through Optional, List, Dict, Union)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    found: list[type[pydantic.BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


@functools.cache
def _fields(model: type[pydantic.BaseModel]) -> dict[str, list[type[pydantic.BaseModel]]]:
    """JSON key -> the models its value is made of, for each field the model declares."""
    return {
        (info.alias or name): _models_in(info.annotation)
        for name, info in model.model_fields.items()
    }


def _unknown_keys(model: type[pydantic.BaseModel], value: Any, path: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _unknown_keys(model, v, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []  # a wrong type is the SDK's own validation's to report
    known = _fields(model)
    problems = [
        f"{path}: unknown key '{k}' for {model.__name__} (known: {', '.join(sorted(known))})"
        for k in value
        if k not in known
    ]
    for key, inner in value.items():
        for sub in known.get(key, [])[:1]:
            problems += _unknown_keys(sub, inner, f"{path}.{key}")
    return problems


def _reference_problems(endpoint: str, body: dict[str, Any]) -> list[str]:
    data = body.get("data")
    if endpoint == "POST /api/profile-bulk-import-jobs":
        items = data["attributes"]["profiles"]["data"]
        problems = [
            f"body.data.attributes.profiles.data[{i}]: a profile needs one of "
            f"{', '.join(IDENTIFIERS)}"
            for i, p in enumerate(items)
            if not any(p["attributes"].get(k) for k in IDENTIFIERS) and not p.get("id")
        ]
    elif endpoint == "POST /api/event-bulk-create-jobs":
        items = [
            e
            for entry in data["attributes"]["events-bulk-create"]["data"]
            for e in entry["attributes"]["events"]["data"]
        ]
        problems = [
            f"body: metric name '{e['attributes']['metric']['data']['attributes']['name'][:40]}' "
            "must be less than 128 characters"
            for e in items
            if len(e["attributes"]["metric"]["data"]["attributes"]["name"]) >= 128
        ]
    else:
        items, problems = data, []
    if len(items) > LIMITS[endpoint]:
        problems.append(f"body: {len(items)} items, at most {LIMITS[endpoint]} a request")
    return problems


def check_request(endpoint: str, body: Any) -> None:
    """Raise ContractError unless `body` is a valid request of `endpoint` (`METHOD /path` with
    `{id}` for ids, a key of ENDPOINT_MODELS) as Klaviyo's SDK models define it."""
    model = ENDPOINT_MODELS.get(endpoint)
    if model is None:
        raise ContractError([f"no such endpoint in the contract: {endpoint}"])
    if not isinstance(body, dict):
        raise ContractError([f"body: expected a JSON object, got {type(body).__name__}"])
    problems = _unknown_keys(model, body, "body")
    if not problems:
        try:
            model.from_dict(body)  # type: ignore[attr-defined]
        except pydantic.ValidationError as exc:
            problems += [
                f"body.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            ]
    if not problems:
        problems += _reference_problems(endpoint, body)
    if problems:
        raise ContractError(problems)
