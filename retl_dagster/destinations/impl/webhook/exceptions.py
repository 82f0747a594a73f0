"""The webhook's errors. It raises none of its own: a request that fails every attempt raises
`http.GaveUp` (a DestinationError), and whatever the receiver refuses is rejected per record;
`retl check` raises `http.Unreachable` when the URL gives no answer."""

from __future__ import annotations

from retl_dagster.destinations.http import GaveUp, Unreachable

__all__ = ["GaveUp", "Unreachable"]
