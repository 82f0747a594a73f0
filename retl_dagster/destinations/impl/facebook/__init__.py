"""Meta (Facebook) Conversions API destination: warehouse rows as server events of a pixel."""

from retl_dagster.destinations.impl.facebook.client import FacebookConversionsDestination
from retl_dagster.destinations.impl.facebook.config import FacebookConversionsConfig

__all__ = ["FacebookConversionsConfig", "FacebookConversionsDestination"]
