from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import DestinationConfig


class PostgresConfig(DestinationConfig):
    """A PostgreSQL database reached through SQLAlchemy + psycopg."""

    url: pydantic.SecretStr
    """`postgresql+psycopg://user:password@host:5432/db` (holds a password: from the env)."""
    batch_size: int = pydantic.Field(default=1000, ge=1, le=50_000)
    create_table: bool = True
    """Create the sync's `object` table (types from the model) when it does not exist."""
