from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class WebhookTransientError(Exception):
    """429, 5xx, timeout or connection reset: worth another attempt."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class WebhookGaveUp(DestinationError):
    """Every attempt at a batch failed transiently."""
