from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings

MAX_PROFILES_PER_JOB = 10_000
"""Profiles a bulk import job takes (Bulk Import Profiles: also at most 5 MB a request)."""
MAX_EVENTS_PER_JOB = 1_000
"""Events a bulk create events job takes (also at most 5 MB a request)."""
MAX_LIST_MEMBERS = 1_000
"""Profiles one add-to / remove-from list call takes."""
MAX_CONCURRENCY = 4
"""Batches in flight at once: the client (httpx, the shared budget) is thread-safe."""


class KlaviyoConfig(HttpSettings, ConcurrencyConfig):
    private_key: pydantic.SecretStr
    """Private API key (`pk_...`) with profiles:write, lists:write, events:write (and
    accounts:read for `retl check`)."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://a.klaviyo.com")
    batch_size: int = pydantic.Field(default=MAX_PROFILES_PER_JOB, ge=1, le=MAX_PROFILES_PER_JOB)
    """Records per batch: one profile import job, or up to ten 1,000-event jobs."""
    concurrency: int = pydantic.Field(default=1, ge=1, le=MAX_CONCURRENCY)
    """Batches in flight at once (1: strictly in order); they share the one request budget."""
    poll_interval_s: float = pydantic.Field(default=2.0, gt=0, le=60)
    """Seconds between reads of a profile import job's status."""
    job_timeout_s: float = pydantic.Field(default=900.0, gt=0)
    """How long to wait for a profile import job to complete before the run fails (its records
    are then resent by the next run; the import is an upsert, so that is harmless)."""
