from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class SegmentAuthError(DestinationError):
    """Segment refused the source's write key (401): nothing can be delivered until it is
    fixed."""
