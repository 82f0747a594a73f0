"""PostgreSQL table destination: upsert / insert / update / mirror rows into a table."""

from retl_dagster.destinations.impl.postgres.client import PostgresDestination
from retl_dagster.destinations.impl.postgres.config import PostgresConfig

__all__ = ["PostgresConfig", "PostgresDestination"]
