from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class IntercomAuthError(DestinationError):
    """Intercom refused the access token (401), or it lacks a permission (403): nothing can be
    delivered until it is fixed."""


class IntercomError(DestinationError):
    """Intercom answered in a way that leaves a record's fate unknown (a 5xx after the retries,
    an unexpected answer): none of the batch's unacknowledged records is marked synced, and the
    next run sends them again (each write is an upsert)."""
