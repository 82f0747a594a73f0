from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import DestinationConfig


class WebhookConfig(DestinationConfig):
    """Generic webhook (DESIGN.md §5)."""

    url: pydantic.AnyHttpUrl
    """Endpoint receiving `POST` batches."""
    secret: pydantic.SecretStr | None = None
    """HMAC-SHA256 key: sent as `X-Retl-Signature: sha256=<hex>` over the raw body."""
    headers: dict[str, str] = {}
    """Extra headers on every request (e.g. an Authorization the receiver expects)."""
    batch_size: int = pydantic.Field(default=100, ge=1, le=10_000)
    timeout_s: float = pydantic.Field(default=30.0, gt=0)
    max_attempts: int = pydantic.Field(default=6, ge=1, le=20)
    """Attempts per batch for 429/5xx/timeouts before the run fails."""
    backoff_initial_s: float = pydantic.Field(default=0.5, ge=0)
    backoff_max_s: float = pydantic.Field(default=30.0, ge=0)
