"""Dagster component types: `retl_dagster.components.Sync` and `.Destinations`."""

from retl_dagster.components.destinations import DestinationResource, Destinations
from retl_dagster.components.sync import Sync

__all__ = ["DestinationResource", "Destinations", "Sync"]
