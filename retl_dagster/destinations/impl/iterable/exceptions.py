from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class IterableError(DestinationError):
    """Iterable answered a request in a way that leaves its records' fate unknown."""


class IterableAuthError(IterableError):
    """Iterable refused the API key (401 `BadApiKey`, 403): nothing can be delivered until it is
    fixed."""
