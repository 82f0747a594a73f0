from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class KlaviyoAuthError(DestinationError):
    """Klaviyo refused the private API key (401/403): nothing can be delivered until it is fixed."""


class KlaviyoJobError(DestinationError):
    """A bulk import job did not finish (cancelled, or still running past `job_timeout_s`): its
    records' fate is unknown, so none of them is marked synced."""
