"""Braze destination: user attributes, custom events and purchases; user deletes."""

from retl_dagster.destinations.braze.client import BrazeConfig, BrazeDestination

__all__ = ["BrazeConfig", "BrazeDestination"]
