"""Salesforce destination: any sObject through the sObject Collections REST API."""

from retl_dagster.destinations.salesforce.client import SalesforceConfig, SalesforceDestination

__all__ = ["SalesforceConfig", "SalesforceDestination"]
