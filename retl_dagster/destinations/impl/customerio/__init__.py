"""Customer.io destination: people (identify / delete) and events through the Track API v2 batch."""

from retl_dagster.destinations.impl.customerio.client import CustomerIODestination
from retl_dagster.destinations.impl.customerio.config import CustomerIOConfig

__all__ = ["CustomerIOConfig", "CustomerIODestination"]
