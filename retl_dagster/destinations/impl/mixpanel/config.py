from __future__ import annotations

import pydantic

from retl_dagster.destinations.http import HttpSettings

MAX_PER_REQUEST = 2000
"""Profile updates or events a request may hold."""


class MixpanelConfig(HttpSettings):
    project_token: pydantic.SecretStr
    """Project token: authenticates /engage profile updates."""
    project_id: str | None = None
    """Needed with a service account for /import (events)."""
    service_account_username: str | None = None
    service_account_secret: pydantic.SecretStr | None = None
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.mixpanel.com")
    """`https://api-eu.mixpanel.com` for EU data residency."""
    batch_size: int = pydantic.Field(default=2000, ge=1, le=MAX_PER_REQUEST)
