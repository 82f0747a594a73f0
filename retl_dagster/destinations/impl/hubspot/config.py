from __future__ import annotations

import pydantic

from retl_dagster.destinations.http import HttpSettings


class HubSpotConfig(HttpSettings):
    """HubSpot CRM v3 through a private app."""

    token: pydantic.SecretStr
    """Private-app access token (Bearer)."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.hubapi.com")
    batch_size: int = pydantic.Field(default=100, ge=1, le=100)
    """Inputs per batch request; HubSpot accepts at most 100."""
