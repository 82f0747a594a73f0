from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class SalesforceLoginError(DestinationError):
    """The OAuth token request failed (bad client credentials or refresh token)."""


class SalesforceApiError(DestinationError):
    """A REST call failed as a whole (not per record): the batch's fate is unknown."""
