"""Intercom destination: contacts (search, then create or update) and companies."""

from retl_dagster.destinations.impl.intercom.client import IntercomDestination
from retl_dagster.destinations.impl.intercom.config import IntercomConfig

__all__ = ["IntercomConfig", "IntercomDestination"]
