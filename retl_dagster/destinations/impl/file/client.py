"""Appends each delivered record to a JSON Lines file, fsynced before it is acknowledged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from retl_dagster.common.settings import data_dir
from retl_dagster.destinations.base import Batch, BatchResult, Destination
from retl_dagster.destinations.impl.file.config import FileConfig
from retl_dagster.destinations.impl.file.exceptions import FileNotWritable


class FileDestination(Destination[FileConfig]):
    type: ClassVar[str] = "file"
    config_class = FileConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 100_000
    pool_limit = 1  # one file, rewritten whole: a second writer would race the first

    def __init__(self, name: str, config: FileConfig) -> None:
        super().__init__(name, config)
        path = Path(config.path)
        self.path = path if path.is_absolute() else data_dir() / path

    def check(self, object_: str | None = None) -> str:
        """The file is writable, or the nearest existing directory on its path is (where the
        first run creates the rest); nothing is created or written."""
        fix = "Fix: set path to a location this user may write, or change its permissions"
        if self.path.exists():
            if not self.path.is_file():
                raise FileNotWritable(
                    f"destination '{self.name}': {self.path} exists and is not a file. {fix}"
                )
            if not os.access(self.path, os.W_OK):
                raise FileNotWritable(
                    f"destination '{self.name}': {self.path} is not writable. {fix}"
                )
            return f"{self.path} exists and is writable ({self.path.stat().st_size} bytes)"
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise FileNotWritable(
                f"destination '{self.name}': {parent} is not a directory, so {self.path} "
                f"cannot be created. {fix}"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise FileNotWritable(
                f"destination '{self.name}': directory {parent} is not writable, so "
                f"{self.path} cannot be created. {fix}"
            )
        made = "" if parent == self.path.parent else " (with its missing directories)"
        return (
            f"{self.path} does not exist yet; {parent} is writable, so the first run "
            f"creates it{made}"
        )

    def deliver(self, batch: Batch) -> BatchResult:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for r in batch.records:
            line: dict[str, Any] = {
                "sync": batch.sync,
                "run_id": batch.run_id,
                "batch_id": batch.batch_id,
                "op": r.op,
                "id": r.key,
            }
            if r.op != "removed":
                line["fields"] = r.fields
            lines.append(json.dumps(line, separators=(",", ":"), allow_nan=False))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            # Acknowledge only what is on disk.
            os.fsync(fh.fileno())
        return BatchResult()
