from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig

MAX_CONCURRENCY = 8
"""Batches in flight at once, each on its own Snowflake session (a transaction is a session's)."""


class SnowflakeConfig(ConcurrencyConfig):
    """A Snowflake account reached through the Snowflake connector for Python."""

    url: pydantic.SecretStr
    """`snowflake://USER[:PASSWORD]@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE`, the form
    `RETL_WAREHOUSE` takes (from the env: it may hold a password). `${NAME}` in it is read from
    the environment when the destination connects. Other query parameters go to the connector
    as they are (`authenticator`, `token`, `private_key_file`, `private_key_file_pwd`, timeouts).
    DATABASE is where a two-part `object` (`schema.table`) lives; the session's temporary
    staging table and stage are created in SCHEMA."""
    batch_size: int = pydantic.Field(default=10_000, ge=1, le=100_000)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches written at once, each on its own session and in its own transaction (a run's
    batches hold disjoint keys; Snowflake queues their UPDATEs on the table's lock)."""
    create_table: bool = True
    """Create the sync's `object` table (types from the model) when it does not exist."""
