from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_BATCH_BYTES = 500_000
"""The Track API's `/api/v2/batch` body must be smaller than 500 KB."""
MAX_OPERATION_BYTES = 32_000
"""Each operation in a batch must be smaller than 32 KB."""
MAX_RECORDS = 1_000
"""Records per delivered batch (the API limits bytes, not operations: chunks follow the bytes)."""
MAX_CONCURRENCY = 4
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""
TRACK_HOSTS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}


class CustomerIOConfig(HttpSettings, ConcurrencyConfig):
    site_id: str = pydantic.Field(min_length=1)
    """The workspace's Site ID (Settings > API Credentials > Track API keys)."""
    api_key: pydantic.SecretStr
    """The Track API key paired with the Site ID (HTTP basic auth `site_id:api_key`)."""
    region: Literal["us", "eu"] = "us"
    """The workspace's data centre: `eu` sends to track-eu.customer.io."""
    base_url: pydantic.AnyHttpUrl | None = None
    """Overrides the region's Track API host (a proxy, or a test server)."""
    batch_size: int = pydantic.Field(default=MAX_RECORDS, ge=1, le=MAX_RECORDS)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order); they share the one request budget."""

    @property
    def track_url(self) -> str:
        return str(self.base_url).rstrip("/") if self.base_url else TRACK_HOSTS[self.region]
