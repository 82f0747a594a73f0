from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class SalesforceLoginError(DestinationError):
    """The OAuth token request failed (bad client credentials or refresh token)."""


class SalesforceApiError(DestinationError):
    """A REST call failed as a whole (not per record): the batch's fate is unknown."""


class SalesforceBulkJobError(DestinationError):
    """A Bulk API 2.0 ingest job ended Failed or Aborted, or did not finish in time: the rows it
    processed are settled, the others were not delivered."""
