from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_CONCURRENCY = 8
"""Batches in flight at once: one request per record, so parallel batches are what makes a
large sync fast; httpx and the shared budget are thread-safe."""
MAX_BATCH = 1_000
"""Records per delivered batch (Intercom has no batch endpoint: a batch is the unit of
acknowledgement, each record its own request)."""
HOSTS = {
    "us": "https://api.intercom.io",
    "eu": "https://api.eu.intercom.io",
    "au": "https://api.au.intercom.io",
}
"""The regional API hosts (the SDK's `IntercomEnvironment`); a token works only in its own."""
API_VERSION = "2.11"


class IntercomConfig(HttpSettings, ConcurrencyConfig):
    access_token: pydantic.SecretStr
    """The app's access token (Developer Hub > your app > Authentication), sent as a bearer."""
    region: Literal["us", "eu", "au"] = "us"
    """The workspace's data region: `eu` uses api.eu.intercom.io, `au` api.au.intercom.io."""
    base_url: pydantic.AnyHttpUrl | None = None
    """Overrides the region's host (a proxy, a test server)."""
    batch_size: int = pydantic.Field(default=100, ge=1, le=MAX_BATCH)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order); they share the one request budget."""

    @property
    def api_url(self) -> str:
        return str(self.base_url).rstrip("/") if self.base_url else HOSTS[self.region]
