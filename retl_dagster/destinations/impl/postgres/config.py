from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig

MAX_CONCURRENCY = 8
"""Batches in flight at once, each in its own transaction on its own pooled connection."""


class PostgresConfig(ConcurrencyConfig):
    """A PostgreSQL database reached through SQLAlchemy + psycopg."""

    url: pydantic.SecretStr
    """`postgresql+psycopg://user:password@host:5432/db` (holds a password: from the env)."""
    batch_size: int = pydantic.Field(default=50_000, ge=1, le=50_000)
    """Rows a transaction. 50,000 (1,000 before): a transaction's fixed cost (begin, COPY,
    commit: ~9 ms) held the destination to 0.30x a raw COPY over 1,000 rows, 0.64x over
    10,000 and 0.78x over 50,000 (BENCHMARKS.md, "PostgreSQL destination")."""
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches written at once, each in its own transaction (a run's batches hold disjoint
    keys, so they do not wait on each other's row locks)."""
    create_table: bool = True
    """Create the sync's `object` table (types from the model) when it does not exist."""
