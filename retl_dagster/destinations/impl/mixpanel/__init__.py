"""Mixpanel destination: user profiles through /engage and events through /import."""

from retl_dagster.destinations.impl.mixpanel.client import MixpanelDestination
from retl_dagster.destinations.impl.mixpanel.config import MixpanelConfig

__all__ = ["MixpanelConfig", "MixpanelDestination"]
