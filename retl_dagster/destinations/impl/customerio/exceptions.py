from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class CustomerIOAuthError(DestinationError):
    """Customer.io refused the site id / Track API key (401): nothing can be delivered."""


class CustomerIOError(DestinationError):
    """An answer whose records' fate is unknown (or a failed check): none is marked synced."""
