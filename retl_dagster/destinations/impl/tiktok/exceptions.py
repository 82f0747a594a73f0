from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class TikTokAuthError(DestinationError):
    """TikTok refused the access token, or its access to the event source or advertiser:
    nothing can be delivered until it is fixed."""


class TikTokAudienceError(DestinationError):
    """The sync's custom audience cannot be read, or holds another kind of identifier."""


class InvalidValue(ValueError):
    """A row's value cannot become what TikTok accepts; the row is rejected with this message."""
