from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_RECORDS = 1_000
"""Users, events or subscribers a bulk request carries. Iterable's reference gives no count for
these endpoints that we could find; RudderStack's Iterable destination batches
`users/bulkUpdate` by 1,000 (rudderlabs/rudder-transformer,
src/v0/destinations/iterable/config.js: IDENTIFY_MAX_BATCH_SIZE = 1000; its trackBulk takes
8,000). 1,000 is the conservative figure for all three endpoints."""
MAX_CONCURRENCY = 4
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""
API_HOSTS = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}
"""Iterable's US and EU data centres' API hosts."""


class IterableConfig(HttpSettings, ConcurrencyConfig):
    api_key: pydantic.SecretStr
    """A server-side API key of the project (sent as the `Api-Key` header)."""
    region: Literal["us", "eu"] = "us"
    """The project's data centre: `eu` sends to api.eu.iterable.com."""
    base_url: pydantic.AnyHttpUrl | None = None
    """Overrides the region's API host (a proxy, or a test server)."""
    batch_size: int = pydantic.Field(default=MAX_RECORDS, ge=1, le=MAX_RECORDS)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order); they share the one request budget."""

    @property
    def api_url(self) -> str:
        return str(self.base_url).rstrip("/") if self.base_url else API_HOSTS[self.region]
