"""Google Ads API destination: offline click conversions and Customer Match user lists."""

from retl_dagster.destinations.impl.google_ads.client import GoogleAdsDestination
from retl_dagster.destinations.impl.google_ads.config import GoogleAdsConfig

__all__ = ["GoogleAdsConfig", "GoogleAdsDestination"]
