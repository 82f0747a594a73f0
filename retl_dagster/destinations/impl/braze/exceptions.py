from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class BrazeAuthError(DestinationError):
    """Braze refused the REST API key (401/403): nothing can be delivered until it is fixed."""
