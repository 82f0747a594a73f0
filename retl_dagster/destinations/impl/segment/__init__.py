"""Segment Tracking API destination: identify and track calls from warehouse rows."""

from retl_dagster.destinations.impl.segment.client import SegmentDestination
from retl_dagster.destinations.impl.segment.config import SegmentConfig

__all__ = ["SegmentConfig", "SegmentDestination"]
