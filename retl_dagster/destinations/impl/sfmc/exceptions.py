from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class SfmcAuthError(DestinationError):
    """Marketing Cloud refused the installed package's credentials, or the token they give:
    nothing can be delivered until they are fixed."""


class SfmcApiError(DestinationError):
    """A request failed as a whole (not per row), or Marketing Cloud answered something we cannot
    read: the fate of its rows is unknown, so none is marked synced."""


class SfmcJobError(DestinationError):
    """An asynchronous request did not finish within `job_timeout_s`: its rows' fate is unknown,
    so none of them is marked synced (the next run sends them again)."""


class SfmcDataExtensionError(DestinationError):
    """The sync's data extension does not exist for these credentials, or does not have the
    fields or primary key the sync needs."""
