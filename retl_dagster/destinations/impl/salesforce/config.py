from __future__ import annotations

from typing import Literal, Self

import pydantic

from retl_dagster.destinations.http import HttpSettings

MAX_RECORDS = 200
"""Records an sObject Collections call may hold (and ids a collections DELETE may name)."""
BULK_THRESHOLD = 2_000
"""Salesforce's advice: an operation on more than about 2,000 records is a good candidate for
Bulk API 2.0; below, sObject Collections."""
MAX_BULK_BATCH = 100_000
"""Records one delivered batch may hold when it may go through Bulk API 2.0 (the engine keeps a
batch in memory until its jobs finish)."""
DEFAULT_BULK_BATCH = 10_000
"""Records per delivered batch when Bulk API 2.0 may be used: one ingest job (Salesforce splits
a job into internal batches of 10,000 records, each counted against the org's daily 15,000)."""


class SalesforceConfig(HttpSettings):
    login_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://login.salesforce.com")
    """`https://test.salesforce.com` for sandboxes, or your My Domain URL."""
    client_id: str
    client_secret: pydantic.SecretStr
    refresh_token: pydantic.SecretStr | None = None
    """Given: the refresh-token flow; else the client-credentials flow."""
    api_version: str = "62.0"
    batch_size: int = pydantic.Field(default=MAX_RECORDS, ge=1, le=MAX_RECORDS)
    """Records per sObject Collections (REST) call."""
    api: Literal["auto", "rest", "bulk"] = "auto"
    """`auto`: a batch's writes (or removals) go through one Bulk API 2.0 ingest job when there
    are more than `bulk_threshold` of them, else through sObject Collections; `rest`: always
    sObject Collections (batches of `batch_size`); `bulk`: always Bulk API 2.0."""
    bulk_threshold: int = pydantic.Field(default=BULK_THRESHOLD, ge=0)
    """`api: auto`: more records than this of one operation in a batch go through Bulk API 2.0."""
    bulk_batch_size: int = pydantic.Field(default=DEFAULT_BULK_BATCH, ge=1, le=MAX_BULK_BATCH)
    """`api: auto | bulk`: records per delivered batch (what `auto` compares with
    `bulk_threshold`: a destination never sees a run's total, only its batches)."""
    hard_delete: bool = False
    """Removals as Bulk API 2.0 `hardDelete` jobs (no Recycle Bin; the user needs the "Bulk API
    Hard Delete" permission), whatever their number: the REST API has no hard delete."""
    bulk_poll_interval_s: float = pydantic.Field(default=2.0, gt=0, le=60)
    """First wait before reading an ingest job's state; each later wait is 1.5 times longer, up
    to `bulk_poll_max_s`. Every read counts against the daily API requests."""
    bulk_poll_max_s: float = pydantic.Field(default=30.0, gt=0, le=600)
    bulk_timeout_s: float = pydantic.Field(default=1800.0, gt=0)
    """How long an ingest job may take; past it the job is aborted, the rows it processed are
    kept, and the run fails (the others are sent again by the next run)."""

    @pydantic.model_validator(mode="after")
    def _hard_delete_needs_bulk(self) -> Self:
        if self.hard_delete and self.api == "rest":
            raise ValueError(
                "hard_delete goes through Bulk API 2.0 jobs (the REST API has no hard delete), "
                "and api is rest. Fix: set api: auto (or bulk), or remove hard_delete"
            )
        return self
