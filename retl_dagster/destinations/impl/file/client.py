"""The file destination: JSON Lines appended to one file (`path`), or a folder of files per run
(`url`: local, S3 or GCS; Parquet, CSV or JSON Lines; each run's changes or a full snapshot)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from retl_dagster.common.settings import data_dir
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationError,
    Problem,
    SyncShape,
)
from retl_dagster.destinations.impl.file.arrow_types import KEY, OP, Column, columns_of
from retl_dagster.destinations.impl.file.config import (
    DEFAULT_APPEND_BATCH,
    DEFAULT_ROWS_PER_FILE,
    MAX_ROWS_PER_FILE,
    FileConfig,
    option_problems,
)
from retl_dagster.destinations.impl.file.exceptions import FileNotWritable
from retl_dagster.destinations.impl.file.runs import Layout, RunWriter, SyncFolder
from retl_dagster.destinations.impl.file.storage import Storage


def _writable_place(name: str, path: Path, kind: str) -> str:
    """`retl check` of a local file or folder: it is writable, or the nearest existing
    directory on its path is (where the first run creates the rest); nothing is written."""
    option = "path" if kind == "file" else "url"
    fix = f"Fix: set {option} to a location this user may write, or change its permissions"
    is_kind = path.is_file() if kind == "file" else path.is_dir()
    if path.exists():
        if not is_kind:
            raise FileNotWritable(f"destination '{name}': {path} exists and is not a {kind}. {fix}")
        if not os.access(path, os.W_OK | (0 if kind == "file" else os.X_OK)):
            raise FileNotWritable(f"destination '{name}': {path} is not writable. {fix}")
        if kind == "file":
            return f"{path} exists and is writable ({path.stat().st_size} bytes)"
        return f"folder {path} exists and is writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FileNotWritable(
            f"destination '{name}': {parent} is not a directory, so {path} cannot be created. {fix}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileNotWritable(
            f"destination '{name}': directory {parent} is not writable, so {path} cannot be "
            f"created. {fix}"
        )
    made = "" if parent == path.parent else " (with its missing directories)"
    return f"{path} does not exist yet; {parent} is writable, so the first run creates it{made}"


class FileDestination(Destination[FileConfig]):
    type: ClassVar[str] = "file"
    config_class = FileConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = MAX_ROWS_PER_FILE
    # `path`: one file, appended to by one writer. `url`: each sync writes its own folder, so a
    # destination's `pool_limit:` may let several syncs write side by side.
    pool_limit = 1

    def __init__(self, name: str, config: FileConfig) -> None:
        super().__init__(name, config)
        self.path: Path | None = None
        self.storage: Storage | None = None
        if config.path is not None:
            path = Path(config.path)
            self.path = path if path.is_absolute() else data_dir() / path
            self.batch_size = config.batch_size or DEFAULT_APPEND_BATCH
        else:
            assert config.url is not None  # the config's validator guarantees one of them
            self.storage = Storage(name, config.url, config)
            # Values as the warehouse gives them (Decimal, datetime, bytes), so Parquet and CSV
            # keep their types (JSON Lines encodes them as every JSON destination does). `path`
            # keeps the JSON-ready values it always had.
            self.native_values = True  # type: ignore[misc]
            self.batch_size = config.batch_size or DEFAULT_ROWS_PER_FILE
            self.layout = Layout(
                config.format, config.compression_or_default, config.write, self.batch_size
            )
        self.columns: list[Column] | None = None
        self.runs: dict[tuple[str, str], RunWriter] = {}

    # -- declarations ------------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[Problem]:
        return option_problems(options)

    @classmethod
    def check_declared(cls, options: Mapping[str, Any], sync: SyncShape) -> list[Problem]:
        if options.get("url") is None:
            return []
        problems: list[Problem] = []
        if options.get("write") == "snapshot" and sync.mode == "events":
            problems.append(
                (
                    "mode",
                    "events are appended, and write: snapshot keeps one row per record key",
                    "set write: changes on the destination (each run's events in its files)",
                )
            )
        for i, f in enumerate(sync.fields, start=1):
            if f in (KEY, OP):
                problems.append(
                    (
                        f"mappings[{i}].to",
                        f"'{f}' is a column every file has (the record's key and its change)",
                        "map to another name",
                    )
                )
        return problems

    # -- a run ---------------------------------------------------------------------------------
    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        self.columns = columns_of(field_types)

    def deliver(self, batch: Batch) -> BatchResult:
        if self.path is not None:
            return self._append(batch)
        run = self._run(batch)
        return BatchResult(rejected=run.write(batch.records))

    def _run(self, batch: Batch) -> RunWriter:
        key = (batch.sync, batch.run_id)
        run = self.runs.get(key)
        if run is None:
            if self.columns is None:
                raise DestinationError(
                    f"destination '{self.name}': deliver before prepare (the engine tells the "
                    "fields' types first)"
                )
            assert self.storage is not None
            folder = SyncFolder(self.storage, batch.sync)
            run = folder.open_run(batch.run_id, self.layout, self.columns)
            self.runs[key] = run
        return run

    def finish(self) -> list[dict[str, Any]]:
        """After a run's last batch: its snapshot (write: snapshot), then its manifest. Called
        when the destination is closed after a load that did not fail."""
        manifests = [run.finish() for run in self.runs.values()]
        self.runs.clear()
        return manifests

    def __exit__(self, *exc: object) -> None:
        try:
            if not exc or exc[0] is None:
                self.finish()
        finally:
            self.runs.clear()
            self.close()

    def _append(self, batch: Batch) -> BatchResult:
        """`path`: each record a JSON line, fsynced before it is acknowledged."""
        assert self.path is not None
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

    # -- retl check ----------------------------------------------------------------------------
    def check(self, object_: str | None = None) -> str:
        """The file or folder is writable, or the nearest existing directory on its path is; a
        bucket exists and can be listed with the credentials. Nothing is created or written."""
        if self.path is not None:
            return _writable_place(self.name, self.path, "file")
        storage = self.storage
        assert storage is not None
        if storage.local:
            return _writable_place(self.name, Path(storage.root), "folder")
        bucket = storage.root.split("/", 1)[0]
        with storage.failing(f"reading bucket {bucket}"):
            found = storage.fs.exists(bucket)
        if not found:
            raise FileNotWritable(
                f"destination '{self.name}': bucket {bucket} does not exist, or these "
                "credentials cannot see it. Fix: create the bucket, or correct url / the "
                "credentials"
            )
        syncs = [n for n in storage.folders(storage.root) if not n.startswith(("_", "."))]
        held = f"{len(syncs)} sync folder(s) under it" if syncs else "nothing under it yet"
        return f"{storage.url}: bucket {bucket} is reachable, {held}"
