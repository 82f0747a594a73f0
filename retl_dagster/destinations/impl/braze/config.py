from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_TRACK_OBJECTS = 75
"""Attributes, events and purchases objects a /users/track request may hold."""


MAX_CONCURRENCY = 8
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""


class BrazeConfig(HttpSettings, ConcurrencyConfig):
    api_key: pydantic.SecretStr
    """REST API key with users.track (and users.delete for deletes)."""
    base_url: pydantic.AnyHttpUrl
    """Your instance's REST endpoint, e.g. `https://rest.iad-01.braze.com`."""
    batch_size: int = pydantic.Field(default=MAX_TRACK_OBJECTS, ge=1, le=MAX_TRACK_OBJECTS)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order). The API takes parallel requests;
    they share the destination's one request budget."""
