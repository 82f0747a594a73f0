from __future__ import annotations

from typing import Literal

import pydantic

from retl_dagster.destinations import phones
from retl_dagster.destinations.http import HttpSettings

MAX_CONVERSIONS = 2000
"""Conversions an uploadClickConversions request may hold (TOO_MANY_CONVERSIONS_IN_REQUEST)."""
MAX_IDENTIFIERS = 100_000
"""User identifiers an addOperations request may hold, across all its operations."""
MAX_RECORDS = 100_000
"""Records a batch (one Customer Match job) may hold."""

Consent = Literal["GRANTED", "DENIED"]


class GoogleAdsConfig(HttpSettings):
    """Google Ads API (REST) for one customer account, with OAuth2 refresh-token auth."""

    customer_id: str = pydantic.Field(pattern=r"^\d{3}-?\d{3}-?\d{4}$")
    """The account that receives the data (dashes allowed)."""
    developer_token: pydantic.SecretStr
    """The API Center's developer token (header `developer-token`)."""
    client_id: str
    """OAuth2 client id of the Google Cloud project."""
    client_secret: pydantic.SecretStr
    refresh_token: pydantic.SecretStr
    """Refresh token of a user with access to the account (scope .../auth/adwords)."""
    login_customer_id: str | None = pydantic.Field(default=None, pattern=r"^\d{3}-?\d{3}-?\d{4}$")
    """The manager account to act through, when access comes from one."""
    api_version: str = pydantic.Field(default="v25", pattern=r"^v\d+$")
    """Google Ads API version; each is sunset about a year after its release."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://googleads.googleapis.com")
    token_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://oauth2.googleapis.com/token")
    conversion_action: str | None = None
    """click_conversions: the conversion action (id or `customers/<id>/conversionActions/<id>`)
    for rows that do not map `conversion_action` themselves."""
    conversion_time_zone: str = "UTC"
    """Time zone of timestamps stored without one (conversionDateTime needs an offset)."""
    currency_code: str | None = pydantic.Field(default=None, pattern=r"^[A-Z]{3}$")
    """click_conversions: currency for rows that do not map `currency_code`."""
    ad_user_data_consent: Consent | None = None
    """Consent to send user data to Google for advertising, sent with every conversion and
    Customer Match job when set (EEA users need it)."""
    ad_personalization_consent: Consent | None = None
    default_phone_country_code: str | None = pydantic.Field(
        default=None, pattern=r"^(\+?\d{1,4}|[A-Za-z]{2})$"
    )
    """Country calling code (`1`, `44`) or ISO region (`US`, `GB`) of phone numbers stored
    without `+` or `00`; E.164 needs one, so without it such numbers are left out."""
    identifiers_per_request: int = pydantic.Field(default=10_000, ge=1, le=MAX_IDENTIFIERS)
    """Customer Match: identifiers per addOperations call (Google suggests 10,000; 100,000 max)."""
    batch_size: int = pydantic.Field(default=10_000, ge=1, le=MAX_RECORDS)
    """Records per batch: a Customer Match job each; conversions go 2,000 a request."""

    @pydantic.field_validator("default_phone_country_code")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        phones.region(value)  # raises ValueError naming the value
        return value
