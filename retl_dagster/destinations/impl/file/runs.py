"""A sync's folder of runs: part files, then a manifest last.

    <url>/<sync>/<run folder>/_run.json                 what the run writes (format, schema...)
    <url>/<sync>/<run folder>/part-00000.parquet        changes: the run's added, changed and
                                                        removed records (`_op`); snapshot: the
                                                        whole current set
    <url>/<sync>/<run folder>/_changes/part-00000...    snapshot: the run's changes
    <url>/<sync>/<run folder>/_manifest.json            written last: the files, their rows, the
                                                        schema, the run, its op counts
    <url>/<sync>/_test_rows/<stamp>-<id>/...            `retl test-row`: never a run

Readers trust a run folder only once it has its manifest, and take run folders in name order:
a run folder is named by its run id (ids begin with the run's UTC start time), or, where that
would sort before a folder already there (a replay, or a retry after later runs), by the time
it is written then the run id.

Each delivered batch is one part file, written whole (see storage) before its records are
acknowledged. A run that stops before its manifest leaves a folder without one: the next run of
the sync that sends records finishes it first. If it is the same run again (a retry, which
resends the run's every record), its unfinished folder is removed; otherwise its part files
hold records the engine marked synced, so they are listed in a manifest of their own, with
status `interrupted` (a snapshot is built from them first).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from retl_dagster.destinations.base import Record
from retl_dagster.destinations.impl.file.arrow_types import (
    KEY,
    OP,
    Column,
    file_schema,
    json_rows,
    table_of,
)
from retl_dagster.destinations.impl.file.config import DEFAULT_ROWS_PER_FILE
from retl_dagster.destinations.impl.file.exceptions import SnapshotError
from retl_dagster.destinations.impl.file.formats import FORMATS, Chunk, FileFormat, KeySet
from retl_dagster.destinations.impl.file.storage import Staged, Storage

FORMAT_VERSION = 1
MANIFEST = "_manifest.json"
HEADER = "_run.json"
CHANGES = "_changes"
TEST_ROWS = "_test_rows"
PART = "part-"
KEPT_OPS = ("added", "changed")
"""Ops whose records a snapshot holds (a removed record leaves it)."""
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z")
_MANIFEST_ORDER = (
    "format_version",
    "sync",
    "run_id",
    "folder",
    "status",
    "test_row",
    "write",
    "format",
    "compression",
    "rows",
    "ops",
    "files",
    "changes",
    "previous",
    "started_at",
    "finished_at",
    "sealed_at",
    "rows_per_file",
    "columns",
    "arrow_schema",
)
"""Keys of a manifest in the order it is written (a person reads it too)."""
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Layout:
    """How a run writes its files (from the destination's config, or a run's `_run.json`)."""

    format: str
    compression: str
    write: str
    rows_per_file: int

    @property
    def fmt(self) -> FileFormat:
        return FORMATS[self.format]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema, exactly, as text (Arrow's IPC form in base64): how a later run reads
    the files back with their types (CSV has none of its own)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _part(index: int, ext: str) -> str:
    return f"{PART}{index:05d}{ext}"


def _is_run_folder(name: str) -> bool:
    """A run folder's name begins with a run id's UTC time; any other folder under the sync's
    (a person's own) is never read, sealed or removed."""
    return bool(_RUN_ID.match(name))


def _write_file(
    storage: Storage, path: str, layout: Layout, schema: pa.Schema, chunk: Chunk
) -> int:
    with storage.failing(f"writing {storage.url_of(path)}"):
        staged = storage.stage(path)
        try:
            writer = layout.fmt.open_writer(staged.local_path, schema, layout.compression)
            writer.write(chunk)
            writer.close()
        except BaseException:
            staged.abort()
            raise
        return staged.commit()


class _Roller:
    """Writes a stream of chunks as part files of at most `rows_per_file` rows each."""

    def __init__(self, storage: Storage, folder: str, layout: Layout, schema: pa.Schema) -> None:
        self.storage, self.folder, self.layout, self.schema = storage, folder, layout, schema
        self.files: list[dict[str, Any]] = []
        self.staged: Staged | None = None
        self.writer: Any = None
        self.rows = 0

    def write(self, chunk: Chunk) -> None:
        fmt = self.layout.fmt
        while fmt.rows(chunk):
            if self.staged is None:
                name = _part(len(self.files), fmt.ext(self.layout.compression))
                self.staged = self.storage.stage(f"{self.folder}/{name}")
                self.writer = fmt.open_writer(
                    self.staged.local_path, self.schema, self.layout.compression
                )
                self.rows = 0
            room = self.layout.rows_per_file - self.rows
            head, chunk = fmt.slice(chunk, 0, room), fmt.slice(chunk, room, fmt.rows(chunk))
            self.writer.write(head)
            self.rows += fmt.rows(head)
            if self.rows >= self.layout.rows_per_file:
                self._close()

    def _close(self) -> None:
        assert self.staged is not None
        self.writer.close()
        size = self.staged.commit()
        name = self.staged.path.rsplit("/", 1)[1]
        self.files.append({"path": name, "rows": self.rows, "bytes": size})
        self.staged = None

    def close(self) -> list[dict[str, Any]]:
        if self.staged is not None:
            self._close()
        return self.files

    def abort(self) -> None:
        if self.staged is not None:
            self.staged.abort()
            self.staged = None


@dataclass
class _Changes:
    """A run's change files and what they hold."""

    files: list[dict[str, Any]] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    keys: KeySet = field(default_factory=KeySet)

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files)


class SyncFolder:
    """`<url>/<sync>/`: its run folders and manifests."""

    def __init__(self, storage: Storage, sync: str) -> None:
        self.storage = storage
        self.sync = sync
        self.path = storage.join(sync)

    def run_path(self, folder: str, *parts: str) -> str:
        return "/".join((self.path, folder, *(p for p in parts if p)))

    def manifest(self, folder: str) -> dict[str, Any] | None:
        return self.storage.read_json(self.run_path(folder, MANIFEST))

    def open_run(self, run_id: str, layout: Layout, columns: Sequence[Column]) -> RunWriter:
        """The folder this attempt of run `run_id` writes, after finishing the folders earlier
        attempts left without a manifest."""
        if not _RUN_ID.match(run_id):
            # A test row (`retl test-row`): kept apart from the runs, never in a snapshot.
            folder = f"{TEST_ROWS}/{_now().strftime(_STAMP)}-{secrets.token_hex(3)}"
            test_layout = Layout(layout.format, layout.compression, "changes", layout.rows_per_file)
            return RunWriter(self, run_id, folder, test_layout, columns, None, None)
        names = [n for n in self.storage.folders(self.path) if _is_run_folder(n)]
        latest: str | None = None
        orphans: list[str] = []
        for name in reversed(names):
            if self.storage.exists(self.run_path(name, MANIFEST)):
                latest = name
                break
            orphans.append(name)
        for name in reversed(orphans):
            # This run's own unfinished attempt goes (this attempt resends every record of the
            # run), as does a folder that holds nothing; another run's is sealed.
            if name == run_id or name.endswith(f"-{run_id}") or not self._seal(name, latest):
                self.storage.remove(self.run_path(name), recursive=True)
                names.remove(name)
            else:
                latest = name
        folder = run_id
        if names and max(names) >= run_id:
            when = _now()
            while f"{when.strftime(_STAMP)}-{run_id}" <= max(names):
                when += dt.timedelta(seconds=1)
            folder = f"{when.strftime(_STAMP)}-{run_id}"
        base = None
        if layout.write == "snapshot" and latest is not None:
            base = self.manifest(latest)
            if base is not None and base.get("write") != "snapshot":
                base = None
            if base is not None and base.get("format") != layout.format:
                raise SnapshotError(
                    f"sync '{self.sync}': the latest snapshot, "
                    f"{self.storage.url_of(self.run_path(latest))}, is {base.get('format')}, "
                    f"and this destination writes {layout.format}. Fix: point url at a new "
                    f"folder and run `retl reset {self.sync}` (the next run then sends every "
                    "record), or set format back"
                )
        return RunWriter(self, run_id, folder, layout, columns, base, latest)

    def _seal(self, folder: str, latest: str | None) -> bool:
        """Finish a run folder an interrupted run left: its part files (acknowledged records)
        get a manifest, `status: interrupted`. False where it holds nothing (no `_run.json`)."""
        header = self.storage.read_json(self.run_path(folder, HEADER))
        if header is None:
            return False
        layout = Layout(
            header["format"],
            header["compression"],
            header["write"],
            int(header.get("rows_per_file") or DEFAULT_ROWS_PER_FILE),
        )
        schema = decode_schema(header["arrow_schema"])
        changes_dir = CHANGES if layout.write == "snapshot" else ""
        changes = _Changes()
        fmt = layout.fmt
        for name, size in self.storage.files(self.run_path(folder, changes_dir)):
            if not name.startswith(PART):
                continue
            rows = 0
            with self.storage.open(self.run_path(folder, changes_dir, name)) as src:
                for chunk in fmt.read(src, schema, layout.compression, layout.rows_per_file):
                    rows += fmt.rows(chunk)
                    changes.ops.update(fmt.values(chunk, OP))
                    if layout.write == "snapshot":
                        changes.keys.update(fmt.values(chunk, KEY))
            path = f"{changes_dir}/{name}" if changes_dir else name
            changes.files.append({"path": path, "rows": rows, "bytes": size})
        manifest = dict(header)
        if layout.write == "snapshot":
            for name, _ in self.storage.files(self.run_path(folder)):
                if name.startswith(PART):  # a snapshot cut short: built again below
                    self.storage.remove(self.run_path(folder, name))
            base = self.manifest(latest) if latest is not None else None
            if base is not None and (
                base.get("write") != "snapshot" or base.get("format") != layout.format
            ):
                base = None
            manifest |= _snapshot(
                self, folder, latest, base, layout, schema, changes, header["columns"]
            )
        else:
            manifest |= {"files": changes.files, "rows": changes.rows}
        manifest |= {
            "status": "interrupted",
            "sealed_at": _iso(_now()),
            "ops": dict(sorted(changes.ops.items())),
        }
        self._write_manifest(folder, manifest)
        return True

    def _write_manifest(self, folder: str, manifest: dict[str, Any]) -> None:
        ordered = {k: manifest[k] for k in _MANIFEST_ORDER if k in manifest}
        ordered |= {k: v for k, v in manifest.items() if k not in ordered}
        self.storage.write_bytes(
            self.run_path(folder, MANIFEST), json.dumps(ordered, indent=2).encode() + b"\n"
        )


def _snapshot(
    sync: SyncFolder,
    folder: str,
    base_folder: str | None,
    base: dict[str, Any] | None,
    layout: Layout,
    changes_schema: pa.Schema,
    changes: _Changes,
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write the snapshot of run `folder`: the base snapshot's rows but those the run changed,
    then the run's added and changed rows; streamed, a part file at a time. Returns the
    manifest's snapshot entries."""
    fmt = layout.fmt
    schema = pa.schema([f for f in changes_schema if f.name != OP])
    roller = _Roller(sync.storage, sync.run_path(folder), layout, schema)
    storage = sync.storage
    with storage.failing(f"writing the snapshot {storage.url_of(sync.run_path(folder))}"):
        try:
            if base is not None and base_folder is not None:
                base_schema = decode_schema(base["arrow_schema"])
                for entry in base["files"]:
                    with storage.open(sync.run_path(base_folder, entry["path"])) as src:
                        for chunk in fmt.read(
                            src, base_schema, base["compression"], layout.rows_per_file
                        ):
                            kept = fmt.without_keys(chunk, changes.keys)
                            roller.write(fmt.conform(kept, schema))
            for entry in changes.files:
                with storage.open(sync.run_path(folder, entry["path"])) as src:
                    for chunk in fmt.read(
                        src, changes_schema, layout.compression, layout.rows_per_file
                    ):
                        roller.write(fmt.conform(fmt.with_ops(chunk, KEPT_OPS), schema))
            files = roller.close()
        except BaseException:
            roller.abort()
            raise
    return {
        "columns": [c for c in columns if c["name"] != OP],
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "changes": changes.files,
        "previous": base_folder if base is not None else None,
        "arrow_schema": encode_schema(schema),
    }


class RunWriter:
    """One attempt of a run: a part file per batch, then (finish) the manifest."""

    def __init__(
        self,
        sync: SyncFolder,
        run_id: str,
        folder: str,
        layout: Layout,
        columns: Sequence[Column],
        base: dict[str, Any] | None,
        base_folder: str | None,
    ) -> None:
        self.sync = sync
        self.run_id = run_id
        self.folder = folder
        self.layout = layout
        self.columns = list(columns)
        self.base = base
        self.base_folder = base_folder
        self.snapshot = layout.write == "snapshot"
        self.changes_dir = CHANGES if self.snapshot else ""
        self.schema = file_schema(columns, changes=True, binary_as_text=layout.format == "csv")
        self.changes = _Changes()
        self.started_at = _iso(_now())
        self.header: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "sync": sync.sync,
            "run_id": run_id,
            "folder": folder,
            "test_row": not _RUN_ID.match(run_id),
            "write": layout.write,
            "format": layout.format,
            "compression": layout.compression,
            "rows_per_file": layout.rows_per_file,
            "started_at": self.started_at,
            "columns": [
                {"name": KEY, "type": "string", "warehouse_type": None},
                {"name": OP, "type": "string", "warehouse_type": None},
                *(c.describe(self.schema.field(c.name).type) for c in columns),
            ],
            "arrow_schema": encode_schema(self.schema),
        }
        sync.storage.write_bytes(
            sync.run_path(folder, HEADER), json.dumps(self.header, indent=2).encode() + b"\n"
        )

    def write(self, records: Sequence[Record]) -> dict[str, str]:
        """Write the records as one part file, whole, before returning; returns the records
        refused (key -> why: a value that does not fit its column's type)."""
        if self.snapshot and self.base is None:
            early = [r for r in records if r.op not in ("added", "event")]
            if early:
                raise SnapshotError(
                    f"sync '{self.sync.sync}': {self.sync.storage.url_of(self.sync.path)} has "
                    f"no snapshot to apply this run's {early[0].op} records to (the sync "
                    "delivered before this url held its snapshots). Fix: run `retl reset "
                    f"{self.sync.sync}` so the next run sends every record as added"
                )
        rejected: dict[str, str] = {}
        chunk: Chunk
        if self.layout.format == "jsonl":
            chunk, kept = json_rows(records, self.columns), list(records)
        else:
            chunk, kept, rejected = self._table(records)
        if not kept:
            return rejected
        fmt = self.layout.fmt
        name = _part(len(self.changes.files), fmt.ext(self.layout.compression))
        path = f"{self.changes_dir}/{name}" if self.changes_dir else name
        target = self.sync.run_path(self.folder, path)
        size = _write_file(self.sync.storage, target, self.layout, self.schema, chunk)
        self.changes.files.append({"path": path, "rows": len(kept), "bytes": size})
        self.changes.ops.update(r.op for r in kept)
        if self.snapshot:
            self.changes.keys.update(r.key for r in kept)
        return rejected

    def _table(self, records: Sequence[Record]) -> tuple[pa.Table, list[Record], dict[str, str]]:
        try:
            return table_of(records, self.columns, self.schema), list(records), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
            pass
        # One value does not fit its column: find which records, keep the others.
        kept: list[Record] = []
        rejected: dict[str, str] = {}
        for r in records:
            try:
                table_of([r], self.columns, self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError) as exc:
                rejected[r.key] = f"value does not fit the file's column: {exc}"
            else:
                kept.append(r)
        return table_of(kept, self.columns, self.schema), kept, rejected

    def finish(self) -> dict[str, Any]:
        """Write the snapshot (write: snapshot), then the manifest, last."""
        manifest = dict(self.header)
        if self.snapshot:
            manifest |= _snapshot(
                self.sync,
                self.folder,
                self.base_folder,
                self.base,
                self.layout,
                self.schema,
                self.changes,
                self.header["columns"],
            )
        else:
            manifest |= {"files": self.changes.files, "rows": self.changes.rows}
        manifest |= {
            "status": "complete",
            "finished_at": _iso(_now()),
            "ops": dict(sorted(self.changes.ops.items())),
        }
        self.sync._write_manifest(self.folder, manifest)
        return manifest
