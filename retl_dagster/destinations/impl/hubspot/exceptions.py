from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class HubSpotAuthError(DestinationError):
    """The token was refused (401/403): nothing can be delivered until it is fixed."""


class HubSpotCheckError(DestinationError):
    """`retl check`: HubSpot answered the read with an error other than an auth refusal."""
