"""Iterable destination: users (bulk update), custom events (bulk track), list subscriptions."""

from retl_dagster.destinations.impl.iterable.client import IterableDestination
from retl_dagster.destinations.impl.iterable.config import IterableConfig

__all__ = ["IterableConfig", "IterableDestination"]
