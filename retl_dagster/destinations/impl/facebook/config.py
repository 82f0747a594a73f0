from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations import phones
from retl_dagster.destinations.http import HttpSettings

MAX_EVENTS = 1000
"""Events a request's `data` may hold (Meta: "up to 1,000 events")."""

ActionSource = Literal[
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
]


class FacebookConversionsConfig(HttpSettings):
    """Meta Conversions API for one pixel (dataset)."""

    access_token: pydantic.SecretStr
    """System-user access token with permission on the pixel; sent in the request body."""
    pixel_id: str
    """The pixel (dataset) id the events belong to."""
    api_version: str = pydantic.Field(default="v25.0", pattern=r"^v\d+\.\d+$")
    """Graph API version; each is supported for about two years."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://graph.facebook.com")
    action_source: ActionSource = "system_generated"
    """Where the conversions happened, for rows that do not map `action_source` themselves.
    `website` events also need `client_user_agent` and `event_source_url`."""
    test_event_code: str | None = None
    """Events Manager's Test Events code: events show there and are not used for ads."""
    default_phone_country_code: str | None = pydantic.Field(
        default=None, pattern=r"^(\+?\d{1,4}|[A-Za-z]{2})$"
    )
    """Country calling code (`1`, `44`) or ISO region (`US`, `GB`) of phone numbers stored
    without one (no `+` or `00`). Without it such numbers are left out of the event: Meta
    matches only numbers that carry their country code."""
    batch_size: int = pydantic.Field(default=MAX_EVENTS, ge=1, le=MAX_EVENTS)

    @pydantic.field_validator("default_phone_country_code")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        phones.region(value)  # raises ValueError naming the value
        return value
