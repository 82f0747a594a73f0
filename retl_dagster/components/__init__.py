"""Dagster component types: `retl_dagster.components.Sync` and `.Destinations`."""

from retl_dagster.components.alerts import Alerts
from retl_dagster.components.destination_resources import DestinationResource, Destinations
from retl_dagster.components.sync import Sync
from retl_dagster.components.upstreams import Upstreams

__all__ = ["Alerts", "DestinationResource", "Destinations", "Sync", "Upstreams"]
