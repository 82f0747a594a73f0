from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class PostgresSchemaError(DestinationError):
    """The target table cannot take the sync (missing table, key or column)."""


class PostgresConnectError(DestinationError):
    """The database cannot be reached or refused the login (`retl check`, or a run)."""
