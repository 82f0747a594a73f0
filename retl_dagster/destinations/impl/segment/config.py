from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_CONCURRENCY = 8
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""


class SegmentConfig(HttpSettings, ConcurrencyConfig):
    write_key: pydantic.SecretStr
    """Source write key (HTTP basic auth user, empty password)."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.segment.io")
    """`https://events.eu1.segmentapis.com` for the EU workspace region."""
    batch_size: int = pydantic.Field(default=200, ge=1, le=2500)
    """Calls considered per request; requests are also split to stay under 500 KB."""
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order). The API takes parallel requests;
    they share the destination's one request budget."""
