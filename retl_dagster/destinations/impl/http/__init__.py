"""Any REST API without code: a templated request per kind of change (the `http` type)."""

from retl_dagster.destinations.impl.http.client import HttpDestination
from retl_dagster.destinations.impl.http.config import HttpConfig

__all__ = ["HttpConfig", "HttpDestination"]
