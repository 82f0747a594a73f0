"""TikTok: the Events API 2.0 (`tiktok_events`) and Customer File audiences (`tiktok_audience`)
of the Business API."""

from retl_dagster.destinations.impl.tiktok.audience import TikTokAudienceDestination
from retl_dagster.destinations.impl.tiktok.config import TikTokAudienceConfig, TikTokEventsConfig
from retl_dagster.destinations.impl.tiktok.events import TikTokEventsDestination

__all__ = [
    "TikTokAudienceConfig",
    "TikTokAudienceDestination",
    "TikTokEventsConfig",
    "TikTokEventsDestination",
]
