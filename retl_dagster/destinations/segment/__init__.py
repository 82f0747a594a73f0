"""Segment Tracking API destination: identify and track calls from warehouse rows."""

from retl_dagster.destinations.segment.client import SegmentConfig, SegmentDestination

__all__ = ["SegmentConfig", "SegmentDestination"]
