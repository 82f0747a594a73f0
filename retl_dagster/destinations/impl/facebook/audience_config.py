from __future__ import annotations

import pydantic

from retl_dagster.destinations import phones
from retl_dagster.destinations.http import HttpSettings

MAX_ROWS_PER_REQUEST = 10_000
"""Customers one `/{audience_id}/users` request may carry (Meta: "only a maximum of 10000 at a
time")."""
MAX_RECORDS = 100_000
"""Records a batch may hold: one upload session each, sent 10,000 a request."""


class FacebookAudienceConfig(HttpSettings):
    """Meta Marketing API, Custom Audiences from a customer list: the sync's `object` is the
    audience's id."""

    access_token: pydantic.SecretStr
    """System-user access token with `ads_management` on the audience's ad account; sent in the
    request body (in the query string of reads), as Meta's Business SDK sends it."""
    app_secret: pydantic.SecretStr | None = None
    """The app's secret, for apps that require `appsecret_proof` (App settings > Advanced >
    Require App Secret): each request then carries the proof (HMAC-SHA256 of the token), never
    the secret itself."""
    api_version: str = pydantic.Field(default="v25.0", pattern=r"^v\d+\.\d+$")
    """Graph API version; each is supported for about two years."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://graph.facebook.com")
    default_phone_country_code: str | None = pydantic.Field(
        default=None, pattern=r"^(\+?\d{1,4}|[A-Za-z]{2})$"
    )
    """Country calling code (`1`, `44`) or ISO region (`US`, `GB`) of phone numbers stored
    without one, for rows that map no `country` (a row's own country comes first). Without
    either, such a number is left out: Meta matches only numbers with their country code."""
    rows_per_request: int = pydantic.Field(
        default=MAX_ROWS_PER_REQUEST, ge=1, le=MAX_ROWS_PER_REQUEST
    )
    """Customers a request carries; a batch goes as one upload session of such requests."""
    batch_size: int = pydantic.Field(default=50_000, ge=1, le=MAX_RECORDS)
    """Records per batch: one upload session (`session_id`, `batch_seq` 1, 2...,
    `last_batch_flag` on its last request) for the additions and one for the removals."""

    @pydantic.field_validator("default_phone_country_code")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        phones.region(value)  # raises ValueError naming the value
        return value
