"""HubSpot CRM v3 destination: contacts, companies, deals and custom objects."""

from retl_dagster.destinations.impl.hubspot.client import HubSpotDestination
from retl_dagster.destinations.impl.hubspot.config import HubSpotConfig

__all__ = ["HubSpotConfig", "HubSpotDestination"]
