"""Appends each delivered record to a JSON Lines file, fsynced before it is acknowledged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from retl_dagster.common.settings import data_dir
from retl_dagster.destinations.base import Batch, BatchResult, Destination
from retl_dagster.destinations.impl.file.config import FileConfig


class FileDestination(Destination[FileConfig]):
    type: ClassVar[str] = "file"
    config_class = FileConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 100_000

    def __init__(self, name: str, config: FileConfig) -> None:
        super().__init__(name, config)
        path = Path(config.path)
        self.path = path if path.is_absolute() else data_dir() / path

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
