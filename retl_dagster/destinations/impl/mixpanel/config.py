from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_PER_REQUEST = 2000
"""Profile updates or events a request may hold."""


MAX_CONCURRENCY = 8
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""


class MixpanelConfig(HttpSettings, ConcurrencyConfig):
    project_token: pydantic.SecretStr
    """Project token: authenticates /engage profile updates."""
    project_id: str | None = None
    """Needed with a service account for /import (events)."""
    service_account_username: str | None = None
    service_account_secret: pydantic.SecretStr | None = None
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.mixpanel.com")
    """`https://api-eu.mixpanel.com` for EU data residency."""
    batch_size: int = pydantic.Field(default=2000, ge=1, le=MAX_PER_REQUEST)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order). The API takes parallel requests;
    they share the destination's one request budget."""
