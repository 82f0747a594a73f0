"""Klaviyo destination: profiles (bulk import jobs), list membership and events (bulk jobs)."""

from retl_dagster.destinations.impl.klaviyo.client import KlaviyoDestination
from retl_dagster.destinations.impl.klaviyo.config import KlaviyoConfig

__all__ = ["KlaviyoConfig", "KlaviyoDestination"]
