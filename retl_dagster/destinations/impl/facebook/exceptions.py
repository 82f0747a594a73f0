from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class FacebookAuthError(DestinationError):
    """Meta refused the access token (Graph API error 190) or its permissions on the pixel:
    nothing can be delivered until it is fixed."""


class InvalidValue(ValueError):
    """A row's value cannot become what Meta accepts; the row is rejected with this message."""


class FacebookAudienceError(DestinationError):
    """The custom audience cannot take members at all (missing, not reachable with the token's
    permissions, flagged by Meta, or not a customer list): the run fails, saying what to fix."""
