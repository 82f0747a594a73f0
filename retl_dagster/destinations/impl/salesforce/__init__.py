"""Salesforce destination: any sObject through the sObject Collections REST API."""

from retl_dagster.destinations.impl.salesforce.client import SalesforceDestination
from retl_dagster.destinations.impl.salesforce.config import SalesforceConfig

__all__ = ["SalesforceConfig", "SalesforceDestination"]
