"""The `http` destination's errors. A request that fails every attempt raises `http.GaveUp`; what
the API refuses, and a template that cannot be rendered for a record, is rejected per record (or
per batch); credentials the API refuses fail the run."""

from __future__ import annotations

from retl_dagster.destinations.base import DestinationError
from retl_dagster.destinations.http import GaveUp, Unreachable


class AuthRefused(DestinationError):
    """The API answered 401 (after a fresh OAuth2 token, where there is one): nothing more is
    sent, and nothing unacknowledged is marked synced."""


class TokenRefused(DestinationError):
    """The OAuth2 token endpoint refused the client credentials."""


class CheckFailed(DestinationError):
    """`retl check`: the declared check request did not answer one of its success codes."""


__all__ = ["AuthRefused", "CheckFailed", "GaveUp", "TokenRefused", "Unreachable"]
