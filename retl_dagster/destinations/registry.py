"""Destination types by name, each imported on first use: `import retl_dagster.destinations`
loads no API client (nor its dependencies) until a sync asks for its type."""

from __future__ import annotations

import importlib
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

from retl_dagster.destinations.base import Destination, DestinationConfigError

_IMPL = "retl_dagster.destinations.impl"

DESTINATIONS: dict[str, str] = {
    "webhook": f"{_IMPL}.webhook.client:WebhookDestination",
    "file": f"{_IMPL}.file.client:FileDestination",
    "postgres": f"{_IMPL}.postgres.client:PostgresDestination",
    "hubspot": f"{_IMPL}.hubspot.client:HubSpotDestination",
    "segment": f"{_IMPL}.segment.client:SegmentDestination",
    "mixpanel": f"{_IMPL}.mixpanel.client:MixpanelDestination",
    "braze": f"{_IMPL}.braze.client:BrazeDestination",
    "salesforce": f"{_IMPL}.salesforce.client:SalesforceDestination",
    "google_sheets": f"{_IMPL}.google_sheets.client:GoogleSheetsDestination",
    "facebook_conversions": f"{_IMPL}.facebook.client:FacebookConversionsDestination",
    "google_ads": f"{_IMPL}.google_ads.client:GoogleAdsDestination",
}
"""Type name -> `module:ClassName` of its Destination."""

_loaded: dict[str, type[Destination[Any]]] = {}


def destination_types() -> list[str]:
    """Every type name a destination may declare, sorted."""
    return sorted(DESTINATIONS)


def _load(type_: str) -> type[Destination[Any]]:
    cls = _loaded.get(type_)
    if cls is None:
        module, _, attr = DESTINATIONS[type_].partition(":")
        loaded = getattr(importlib.import_module(module), attr)
        if not (isinstance(loaded, type) and issubclass(loaded, Destination)):
            raise TypeError(f"{DESTINATIONS[type_]} is not a Destination")
        if loaded.type != type_:
            raise TypeError(f"{DESTINATIONS[type_]} has type '{loaded.type}', not '{type_}'")
        cls = _loaded[type_] = loaded
    return cls


def destination_class(name: str, type_: str) -> type[Destination[Any]]:
    """The client class of type `type_` (imported now if it is not yet); an unknown type is
    destination `name`'s declaration error."""
    if type_ not in DESTINATIONS:
        raise DestinationConfigError(
            name, "type", f"unknown type '{type_}'", f"use one of {destination_types()}"
        )
    return _load(type_)


def secret_fields(type_: str) -> set[str]:
    """Config fields that hold secrets (typed SecretStr): they must come from the environment."""
    if type_ not in DESTINATIONS:
        return set()
    fields = _load(type_).config_class.model_fields
    return {n for n, f in fields.items() if "SecretStr" in str(f.annotation)}


def _first_error(exc: pydantic.ValidationError, names: list[str]) -> ErrorDetails:
    """The error of the field declared first (then keys the config does not know, then the
    config's own rules): pydantic checks inherited fields such as `batch_size` first, but a
    config's own declaration order is the one its messages follow."""
    order = {n: i for i, n in enumerate(names)}

    def rank(err: ErrorDetails) -> int:
        loc = err["loc"]
        return order.get(str(loc[0]), len(order)) if loc else len(order)

    return min(exc.errors(), key=rank)  # min keeps pydantic's order among equals


def build_destination(name: str, type_: str, options: dict[str, Any]) -> Destination[Any]:
    """Validate `options` against the type's config and return a ready client."""
    cls = destination_class(name, type_)
    try:
        config = cls.config_class.model_validate(options)
    except pydantic.ValidationError as exc:
        names = cls.config_class.field_names()
        err = _first_error(exc, names)
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        fields = ", ".join(names)
        raise DestinationConfigError(
            name, field, err["msg"], f"give a valid value; '{type_}' accepts: {fields}"
        ) from None
    return cls(name, config)
