from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings


class WebhookConfig(HttpSettings, ConcurrencyConfig):
    """Generic webhook."""

    url: pydantic.AnyHttpUrl
    """Endpoint receiving `POST` batches."""
    secret: pydantic.SecretStr | None = None
    """HMAC-SHA256 key: sent as `X-Retl-Signature: sha256=<hex>` over the raw body."""
    headers: dict[str, str] = {}
    """Extra headers on every request (e.g. an Authorization the receiver expects)."""
    batch_size: int = pydantic.Field(default=100, ge=1, le=10_000)
    concurrency: int = pydantic.Field(default=4, ge=1, le=32)
    """Batches in flight at once. Records of one run have distinct keys, so their order
    across batches does not matter; 1 sends batches strictly one after another."""
