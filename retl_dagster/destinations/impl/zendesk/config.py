from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_PER_JOB = 100
"""Users one create_or_update_many job takes, and ids one destroy_many takes."""
MAX_CONCURRENCY = 4
"""Batches in flight at once (Zendesk queues at most 30 jobs per account; httpx and the shared
budget are thread-safe)."""


class ZendeskConfig(HttpSettings, ConcurrencyConfig):
    subdomain: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    """`acme` for https://acme.zendesk.com."""
    email: str = pydantic.Field(pattern=r"^[^@\s]+@[^@\s]+$")
    """The agent or admin the API token acts as."""
    api_token: pydantic.SecretStr
    """An API token (Admin Center > Apps and integrations > Zendesk API)."""
    base_url: pydantic.AnyHttpUrl | None = None
    """Overrides https://{subdomain}.zendesk.com (a proxy, a test server)."""
    requests_per_minute: int = pydantic.Field(default=200, ge=1, le=2500)
    """The account's API limit, shared by every run: 200 is the Team plan's (Professional 400,
    Enterprise 700, High Volume add-on 2500)."""
    batch_size: int = pydantic.Field(default=MAX_PER_JOB, ge=1, le=MAX_PER_JOB)
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order)."""
    poll_interval_s: float = pydantic.Field(default=1.0, gt=0, le=60)
    """Seconds between reads of a job's status."""
    job_timeout_s: float = pydantic.Field(default=600.0, gt=0)
    """How long to wait for a job to complete before the run fails (its records are sent again
    by the next run; the writes are upserts, so that is harmless)."""

    def url(self) -> str:
        return str(self.base_url or f"https://{self.subdomain}.zendesk.com").rstrip("/")
