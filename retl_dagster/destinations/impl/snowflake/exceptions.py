from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class SnowflakeSchemaError(DestinationError):
    """The target table cannot take the sync (missing table, schema, key or column)."""


class SnowflakeConnectError(DestinationError):
    """Snowflake cannot be reached or refused the login (`retl check`, or a run)."""


class SnowflakeDeliveryError(DestinationError):
    """Snowflake refused a statement for a reason that is not one record's value (a lost
    connection, a missing privilege, a dropped table): the run fails, nothing of the batch is
    marked synced."""
