from __future__ import annotations

import pydantic
from pyrate_limiter import Duration, Rate

from retl_dagster.destinations.http import HttpSettings

MAX_ELEMENTS = 5000
"""Elements a BATCH_CREATE request may hold, for DMP segment users and for conversion events
alike ("up to 5,000" a batch)."""
API_WINDOW = Rate(600, Duration.MINUTE)
"""LinkedIn's per-member limit of the streaming endpoints: 600 requests a minute on
`/dmpSegments/{id}/users` (a 429 past it); the Conversions API documents the same 600 a
minute. Daily quotas differ by app (Developer Portal > Analytics): set `requests_per_day`."""
DEFAULT_VERSION = "202610"
"""`LinkedIn-Version` (YYYYMM): LinkedIn supports each monthly version for about a year."""


class LinkedInConfig(HttpSettings):
    """What both LinkedIn Marketing API destinations need: an OAuth2 access token and a
    version."""

    access_token: pydantic.SecretStr
    """A 3-legged OAuth2 access token (60 days) of a member with a role above VIEWER on the ad
    account, sent as `Authorization: Bearer`."""
    api_version: str = pydantic.Field(default=DEFAULT_VERSION, pattern=r"^\d{6}(\.\d{2})?$")
    """Marketing API version, sent as the `LinkedIn-Version` header (YYYYMM)."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.linkedin.com/rest")
    batch_size: int = pydantic.Field(default=MAX_ELEMENTS, ge=1, le=MAX_ELEMENTS)


class LinkedInAudienceConfig(LinkedInConfig):
    """Matched Audiences: members of DMP segments (scope `rw_dmp_segments`)."""


class LinkedInConversionsConfig(LinkedInConfig):
    """Conversions API: conversion events of conversion rules (scope `rw_conversions`)."""

    currency_code: str | None = pydantic.Field(default=None, pattern=r"^[A-Z]{3}$")
    """ISO 4217 currency of `value` for rows that do not map `currency`."""
    ad_account_id: str | None = pydantic.Field(default=None, pattern=r"^\d+$")
    """The sponsored ad account owning the conversion rules: only `retl check` needs it (LinkedIn
    reads a rule by its account)."""
