"""Snowflake table destination: upsert / insert / update / mirror rows into a warehouse table,
staged in bulk (Parquet, PUT and COPY INTO a temporary table). The Snowflake connector is
imported only when a destination of this type connects."""

from retl_dagster.destinations.impl.snowflake.client import SnowflakeDestination
from retl_dagster.destinations.impl.snowflake.config import SnowflakeConfig

__all__ = ["SnowflakeConfig", "SnowflakeDestination"]
