"""Destination API clients, one package per API under `impl/`, and the registry that builds
them by type (importing each only when its type is first asked for)."""

from __future__ import annotations

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationConfigError,
    DestinationError,
    Record,
)
from retl_dagster.destinations.registry import (
    build_destination,
    destination_class,
    destination_types,
    secret_fields,
    verbatim_fields,
)

__all__ = [
    "Batch",
    "BatchResult",
    "Destination",
    "DestinationConfigError",
    "DestinationError",
    "Record",
    "build_destination",
    "destination_class",
    "destination_types",
    "secret_fields",
    "verbatim_fields",
]
