"""The file destination's errors: a file it cannot write during a run raises the OSError that
says why, and the run fails with nothing unacknowledged marked synced; `retl check` raises
FileNotWritable before a run gets there."""

from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class FileNotWritable(DestinationError):
    """The file, or the directory it would be created in, cannot be written."""


__all__ = ["FileNotWritable"]
