"""Google Sheets destination: mirror a model into one tab of a spreadsheet (Sheets API v4,
service-account OAuth)."""

from retl_dagster.destinations.impl.google_sheets.client import GoogleSheetsDestination
from retl_dagster.destinations.impl.google_sheets.config import GoogleSheetsConfig

__all__ = ["GoogleSheetsConfig", "GoogleSheetsDestination"]
