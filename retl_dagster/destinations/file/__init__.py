"""Local file destination: appends each delivered record to a JSON Lines file.

Works offline with nothing else running, so the demo and first-time users can watch a sync
without any SaaS account. Each line is one record in the webhook's record shape plus its
sync, run and batch ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pydantic

from retl_dagster.common.settings import data_dir
from retl_dagster.destinations.base import Batch, BatchResult, Destination, DestinationConfig


class FileConfig(DestinationConfig):
    path: str
    """JSON Lines file to append to; a relative path is under the data dir (`RETL_DATA_DIR`,
    default `<project>/data`)."""
    batch_size: int = pydantic.Field(default=1000, ge=1, le=100_000)


class FileDestination(Destination):
    type: ClassVar[str] = "file"
    config_class = FileConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 100_000

    def __init__(self, name: str, config: FileConfig) -> None:  # type: ignore[override]
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
