from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class GoogleSheetsError(DestinationError):
    """The spreadsheet cannot be written at all: the run fails, nothing unacknowledged is
    marked synced."""


class GoogleSheetsAuthError(GoogleSheetsError):
    """Google refused the service account: its key at the token endpoint, or its access token or
    permissions on the spreadsheet (401/403)."""


class SpreadsheetNotFound(GoogleSheetsError):
    """No spreadsheet with the configured id (404)."""


class TabNotOwned(GoogleSheetsError):
    """The tab's first row is not this sync's header: it holds someone else's data."""
