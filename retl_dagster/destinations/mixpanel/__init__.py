"""Mixpanel destination: user profiles through /engage and events through /import."""

from retl_dagster.destinations.mixpanel.client import MixpanelConfig, MixpanelDestination

__all__ = ["MixpanelConfig", "MixpanelDestination"]
