from __future__ import annotations

import re

import pydantic

from retl_dagster.destinations.http import HttpSettings

MAX_ASYNC_OBJECTS = 32_000
"""Objects one asynchronous request may hold: Marketing Cloud's hard limit ("Maximum batch size
for asynchronous API requests", API Limits and Guidelines)."""
DEFAULT_BATCH = 5_000
"""Rows per batch by default: one asynchronous request each, well inside the hard limit, so a
batch's results stay quick to read back."""
MAX_SYNC_OBJECTS = 50
"""Objects per synchronous (SOAP) request: Marketing Cloud's documented batch size for
synchronous API requests, used for deletes."""
_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")


class SfmcConfig(HttpSettings):
    subdomain: str | None = None
    """The tenant's subdomain (`mc563885gzs27c5t9-63k636ttgm` in
    `https://mc563885gzs27c5t9-63k636ttgm.auth.marketingcloudapis.com/`): Setup > Apps >
    Installed Packages > the API Integration component's Authentication Base URI."""
    auth_base_url: pydantic.AnyHttpUrl | None = None
    """The whole Authentication Base URI instead of `subdomain` (a proxy, tests)."""
    client_id: str
    """The API Integration component's Client Id (Server-to-Server)."""
    client_secret: pydantic.SecretStr
    account_id: str | None = None
    """The MID of the business unit whose data extension the syncs write; unset: the package's
    default business unit."""
    batch_size: int = pydantic.Field(default=DEFAULT_BATCH, ge=1, le=MAX_ASYNC_OBJECTS)
    """Rows per batch: one asynchronous request each (also split to stay under 4.5 MB)."""
    poll_interval_s: float = pydantic.Field(default=2.0, gt=0, le=60)
    """Seconds between reads of an asynchronous request's status."""
    job_timeout_s: float = pydantic.Field(default=900.0, gt=0)
    """How long to wait for Marketing Cloud to process an asynchronous request before the run
    fails (its rows are then sent again by the next run)."""

    @pydantic.field_validator("subdomain")
    @classmethod
    def _subdomain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        for suffix in (".auth.marketingcloudapis.com", ".rest.marketingcloudapis.com"):
            value = value.removeprefix("https://").split("/")[0].removesuffix(suffix)
        if not _SUBDOMAIN.match(value):
            raise ValueError(
                f"'{value}' is not a Marketing Cloud subdomain. Fix: copy it from the "
                "Authentication Base URI https://<subdomain>.auth.marketingcloudapis.com/ in "
                "Setup > Installed Packages"
            )
        return value

    @pydantic.model_validator(mode="after")
    def _one_auth_url(self) -> SfmcConfig:
        if (self.subdomain is None) == (self.auth_base_url is None):
            raise ValueError(
                "set exactly one of subdomain and auth_base_url. Fix: give `subdomain:` (from "
                "the Authentication Base URI in Setup > Installed Packages)"
            )
        return self

    @property
    def token_url(self) -> str:
        base = (
            str(self.auth_base_url).rstrip("/")
            if self.auth_base_url is not None
            else f"https://{self.subdomain}.auth.marketingcloudapis.com"
        )
        return f"{base}/v2/token"
