from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class LinkedInAuthError(DestinationError):
    """LinkedIn refused the access token (401) or its permissions (403): nothing can be
    delivered until it is fixed."""


class LinkedInApiError(DestinationError):
    """LinkedIn refused every request of the run alike: an inactive `LinkedIn-Version`, or a DMP
    segment or conversion rule that does not exist."""


class InvalidValue(ValueError):
    """A row's value cannot become what LinkedIn accepts; the row is rejected with this
    message."""
