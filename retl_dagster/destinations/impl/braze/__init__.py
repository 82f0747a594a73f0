"""Braze destination: user attributes, custom events and purchases; user deletes."""

from retl_dagster.destinations.impl.braze.client import BrazeDestination
from retl_dagster.destinations.impl.braze.config import BrazeConfig

__all__ = ["BrazeConfig", "BrazeDestination"]
