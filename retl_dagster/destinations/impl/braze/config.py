from __future__ import annotations

import pydantic

from retl_dagster.destinations.http import HttpSettings

MAX_TRACK_OBJECTS = 75
"""Attributes, events and purchases objects a /users/track request may hold."""


class BrazeConfig(HttpSettings):
    api_key: pydantic.SecretStr
    """REST API key with users.track (and users.delete for deletes)."""
    base_url: pydantic.AnyHttpUrl
    """Your instance's REST endpoint, e.g. `https://rest.iad-01.braze.com`."""
    batch_size: int = pydantic.Field(default=MAX_TRACK_OBJECTS, ge=1, le=MAX_TRACK_OBJECTS)
