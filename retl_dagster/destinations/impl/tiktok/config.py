from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations import phones
from retl_dagster.destinations.http import HttpSettings

MAX_EVENTS = 1000
"""Events a `POST /event/track/` request's `data` may hold."""
MAX_MEMBERS = 500_000
"""Identifiers one customer file (one batch) may carry: 33 MB of hex digests, far below the
file size TikTok accepts."""
DEFAULT_RPS = 10.0
"""Client-side requests per second unless `requests_per_second` says otherwise: TikTok sets
Business API limits per app and endpoint and answers code 40100 past them (then backed off)."""

EventSource = Literal["web", "app", "offline", "crm"]


class TikTokSettings(HttpSettings):
    """What both TikTok destinations share: the Business API and its access token."""

    access_token: pydantic.SecretStr
    """Business API access token, sent in the `Access-Token` header."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://business-api.tiktok.com")
    api_version: str = pydantic.Field(default="v1.3", pattern=r"^v\d+\.\d+$")
    default_phone_country_code: str | None = pydantic.Field(
        default=None, pattern=r"^(\+?\d{1,4}|[A-Za-z]{2})$"
    )
    """Country calling code (`1`, `44`) or ISO region (`US`, `GB`) of phone numbers stored
    without one (no `+` or `00`). TikTok hashes phones in E.164, so without it such numbers are
    left out (events) or their rows rejected (audiences)."""

    @pydantic.field_validator("default_phone_country_code")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        phones.region(value)  # raises ValueError naming the value
        return value


class TikTokEventsConfig(TikTokSettings):
    """Events API 2.0 for one event source (a pixel, an app, an offline or CRM event set)."""

    event_source: EventSource = "web"
    """`web` (a pixel), `app` (a TikTok App ID), `offline` or `crm` (an event set)."""
    event_source_id: str = pydantic.Field(min_length=1)
    """The pixel code, TikTok App ID, or offline / CRM event set id the events belong to."""
    test_event_code: str | None = None
    """Events Manager's Test Events code: events show there and are not used for ads."""
    batch_size: int = pydantic.Field(default=MAX_EVENTS, ge=1, le=MAX_EVENTS)


class TikTokAudienceConfig(TikTokSettings):
    """Customer File custom audiences (DMP) of one advertiser account."""

    advertiser_id: str = pydantic.Field(pattern=r"^\d+$")
    """The ad account that owns the audiences."""
    batch_size: int = pydantic.Field(default=50_000, ge=1, le=MAX_MEMBERS)
    """Records per batch: each becomes one customer file (per action) and one audience update."""
