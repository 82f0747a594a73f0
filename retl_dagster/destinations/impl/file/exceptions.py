"""The file destination's errors: a file it cannot write during a run raises the error that
says why, and the run fails with nothing unacknowledged marked synced; `retl check` raises
FileNotWritable before a run gets there."""

from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class FileNotWritable(DestinationError):
    """The file, or the directory it would be created in, cannot be written."""


class FileStorageError(DestinationError):
    """The folder or bucket of `url` refused a read, a listing or a write (missing bucket,
    credentials that may not write it, a network error after the library's retries)."""


class SnapshotError(DestinationError):
    """A `write: snapshot` run cannot build a complete snapshot (no earlier one to apply its
    changes to, or one in another format)."""


__all__ = ["FileNotWritable", "FileStorageError", "SnapshotError"]
