"""The file destination raises no errors of its own: a file it cannot write raises the OSError
that says why, and the run fails with nothing unacknowledged marked synced."""

from __future__ import annotations

__all__: list[str] = []
