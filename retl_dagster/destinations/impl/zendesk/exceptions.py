from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class ZendeskAuthError(DestinationError):
    """Zendesk refused the email / API token (401/403): nothing can be delivered until fixed."""


class ZendeskJobError(DestinationError):
    """A background job did not complete (failed, killed, or running past `job_timeout_s`), or
    Zendesk answered a request in a way that leaves its records' fate unknown: none of them is
    marked synced, and the next run sends them again (every write is an upsert)."""
