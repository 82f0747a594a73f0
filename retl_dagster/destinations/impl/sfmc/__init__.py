"""Salesforce Marketing Cloud destination: data extension rows upserted or inserted through the
REST API's asynchronous data extension endpoints, deleted through the SOAP API."""

from retl_dagster.destinations.impl.sfmc.client import SfmcDestination
from retl_dagster.destinations.impl.sfmc.config import SfmcConfig

__all__ = ["SfmcConfig", "SfmcDestination"]
