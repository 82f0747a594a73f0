from __future__ import annotations

import pydantic

from retl_dagster.destinations.base import DestinationConfig


class FileConfig(DestinationConfig):
    path: str
    """JSON Lines file to append to; a relative path is under the data dir (`RETL_DATA_DIR`,
    default `<project>/data`)."""
    batch_size: int = pydantic.Field(default=1000, ge=1, le=100_000)
