"""Destination API clients, one package per API, and the registry that builds them by type."""

from __future__ import annotations

from typing import Any

import pydantic

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationConfigError,
    DestinationError,
    Record,
)
from retl_dagster.destinations.braze import BrazeDestination
from retl_dagster.destinations.facebook import FacebookConversionsDestination
from retl_dagster.destinations.file import FileDestination
from retl_dagster.destinations.google_ads import GoogleAdsDestination
from retl_dagster.destinations.google_sheets import GoogleSheetsDestination
from retl_dagster.destinations.hubspot import HubSpotDestination
from retl_dagster.destinations.mixpanel import MixpanelDestination
from retl_dagster.destinations.postgres import PostgresDestination
from retl_dagster.destinations.salesforce import SalesforceDestination
from retl_dagster.destinations.segment import SegmentDestination
from retl_dagster.destinations.webhook import WebhookDestination

DESTINATION_TYPES: dict[str, type[Destination]] = {
    cls.type: cls
    for cls in (
        WebhookDestination,
        FileDestination,
        PostgresDestination,
        HubSpotDestination,
        SegmentDestination,
        MixpanelDestination,
        BrazeDestination,
        SalesforceDestination,
        GoogleSheetsDestination,
        FacebookConversionsDestination,
        GoogleAdsDestination,
    )
}


def destination_class(name: str, type_: str) -> type[Destination]:
    try:
        return DESTINATION_TYPES[type_]
    except KeyError:
        raise DestinationConfigError(
            name, "type", f"unknown type '{type_}'", f"use one of {sorted(DESTINATION_TYPES)}"
        ) from None


def secret_fields(type_: str) -> set[str]:
    """Config fields that hold secrets (typed SecretStr): they must come from the environment."""
    cls = DESTINATION_TYPES.get(type_)
    if cls is None:
        return set()
    return {n for n, f in cls.config_class.model_fields.items() if "SecretStr" in str(f.annotation)}


def build_destination(name: str, type_: str, options: dict[str, Any]) -> Destination:
    """Validate `options` against the type's config and return a ready client."""
    cls = destination_class(name, type_)
    try:
        config = cls.config_class.model_validate(options)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        fields = ", ".join(cls.config_class.model_fields)
        raise DestinationConfigError(
            name, field, err["msg"], f"give a valid value; '{type_}' accepts: {fields}"
        ) from None
    return cls(name, config)


__all__ = [
    "DESTINATION_TYPES",
    "Batch",
    "BatchResult",
    "Destination",
    "DestinationConfigError",
    "DestinationError",
    "Record",
    "build_destination",
    "destination_class",
    "secret_fields",
]
