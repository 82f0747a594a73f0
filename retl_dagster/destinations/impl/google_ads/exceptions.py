from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class GoogleAdsAuthError(DestinationError):
    """Google refused the OAuth refresh token, the access token after a refresh, the developer
    token, or access to the customer: nothing can be delivered until it is fixed."""


class MissingConversionAction(DestinationError):
    """Click conversions with no conversion action: neither the config nor a mapping gives one."""


class InvalidValue(ValueError):
    """A row's value cannot become what Google accepts; the row is rejected with this message."""


class GoogleAdsCheckError(DestinationError):
    """`retl check`: the account or the sync's user list cannot be read."""
