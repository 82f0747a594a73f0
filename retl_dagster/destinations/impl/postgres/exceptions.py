from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class PostgresSchemaError(DestinationError):
    """The target table cannot take the sync (missing table, key or column)."""
