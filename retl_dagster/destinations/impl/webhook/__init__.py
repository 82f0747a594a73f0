"""Generic webhook destination: JSON batches over HTTP POST, signed, idempotent."""

from retl_dagster.destinations.impl.webhook.client import WebhookDestination
from retl_dagster.destinations.impl.webhook.config import WebhookConfig

__all__ = ["WebhookConfig", "WebhookDestination"]
