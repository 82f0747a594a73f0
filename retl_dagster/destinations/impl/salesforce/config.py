from __future__ import annotations

import pydantic

from retl_dagster.destinations.http import HttpSettings

MAX_RECORDS = 200
"""Records an sObject Collections call may hold."""


class SalesforceConfig(HttpSettings):
    login_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://login.salesforce.com")
    """`https://test.salesforce.com` for sandboxes, or your My Domain URL."""
    client_id: str
    client_secret: pydantic.SecretStr
    refresh_token: pydantic.SecretStr | None = None
    """Given: the refresh-token flow; else the client-credentials flow."""
    api_version: str = "62.0"
    batch_size: int = pydantic.Field(default=MAX_RECORDS, ge=1, le=MAX_RECORDS)
