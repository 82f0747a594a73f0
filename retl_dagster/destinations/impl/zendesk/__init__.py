"""Zendesk Support destination: users (bulk create-or-update jobs) and organizations."""

from retl_dagster.destinations.impl.zendesk.client import ZendeskDestination
from retl_dagster.destinations.impl.zendesk.config import ZendeskConfig

__all__ = ["ZendeskConfig", "ZendeskDestination"]
