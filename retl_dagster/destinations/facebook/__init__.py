"""Meta (Facebook) Conversions API destination: warehouse rows as server events of a pixel."""

from retl_dagster.destinations.facebook.client import FacebookConversionsDestination
from retl_dagster.destinations.facebook.config import FacebookConversionsConfig

__all__ = ["FacebookConversionsConfig", "FacebookConversionsDestination"]
