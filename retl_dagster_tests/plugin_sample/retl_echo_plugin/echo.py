"""Destination type `echo`: appends each record as a JSON line to `path` (any mode, any delete
behaviour). What a destination in its own package needs: a `DestinationConfig`, a `Destination`
subclass with `type`, `config_class`, `modes`, `max_batch_size` and `deliver`, and an entry point
in the group `retl_dagster.destinations` naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pydantic

from retl_dagster.destinations import Batch, BatchResult, Destination
from retl_dagster.destinations.base import DestinationConfig


class EchoConfig(DestinationConfig):
    path: str
    """File the records are appended to, one JSON object a line."""
    batch_size: int = pydantic.Field(default=100, ge=1, le=1000)


class EchoDestination(Destination[EchoConfig]):
    type: ClassVar[str] = "echo"
    config_class = EchoConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 1000

    def deliver(self, batch: Batch) -> BatchResult:
        with Path(self.config.path).open("a") as out:
            for r in batch.records:
                line = {"sync": batch.sync, "op": r.op, "key": r.key, "fields": r.fields}
                out.write(json.dumps(line) + "\n")
        return BatchResult()

    def check(self, object_: str | None = None) -> str:
        return f"{self.config.path} is where records go"
