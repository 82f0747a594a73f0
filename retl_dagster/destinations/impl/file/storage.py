"""Where the files go: a local folder or a bucket, through fsspec (s3fs for S3, gcsfs for GCS).

Every file appears whole or not at all. A local file is written under a hidden temporary name
in its folder, fsynced, renamed into place and its folder fsynced; a file for a bucket is
written to a local temporary file, then uploaded in one PUT (or one multipart upload), and an
object store shows an object only once its upload completed.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from retl_dagster.common.settings import data_dir
from retl_dagster.destinations.base import DestinationConfigError, DestinationError
from retl_dagster.destinations.impl.file.config import FileConfig
from retl_dagster.destinations.impl.file.exceptions import FileStorageError

_PACKAGES = {"s3": ("s3fs", "s3fs"), "gs": ("gcsfs", "retl-dagster[gcs]")}
"""scheme -> (the fsspec implementation it needs, what to pip install)."""


def _scheme(url: str) -> str | None:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else None


def local_folder(url: str) -> Path:
    """The local folder of a `file://` URL or a path (relative: under the data dir)."""
    raw = url[len("file://") :] if url.lower().startswith("file://") else url
    path = Path(raw).expanduser()
    return path if path.is_absolute() else data_dir() / path


def _options(name: str, scheme: str, config: FileConfig) -> dict[str, Any]:
    """fsspec's options of the storage: credentials only as given (else each library's default
    chain), and a filesystem of its own (fsspec shares instances with equal options)."""
    if scheme == "s3":
        opts: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        for field, key in (
            ("access_key_id", "key"),
            ("secret_access_key", "secret"),
            ("session_token", "token"),
        ):
            value = getattr(config, field)
            if value is not None:
                opts[key] = value.get_secret_value()
        if config.endpoint_url:
            opts["endpoint_url"] = config.endpoint_url
        if config.region:
            opts["client_kwargs"] = {"region_name": config.region}
        return opts
    opts = {"skip_instance_cache": True}
    if config.gcs_credentials is not None:
        try:
            opts["token"] = json.loads(config.gcs_credentials.get_secret_value())
        except ValueError:
            raise DestinationConfigError(
                name,
                "gcs_credentials",
                "is not JSON (a service account key's JSON text)",
                "set it to the key file's content, from the environment",
            ) from None
    return opts


class Staged:
    """A file being written: `local_path` to write to, then `commit()` puts it in place whole,
    or `abort()` leaves nothing."""

    def __init__(self, storage: Storage, path: str) -> None:
        self.storage = storage
        self.path = path
        if storage.local:
            folder, base = posixpath.split(path)
            os.makedirs(folder, exist_ok=True)
            self.local_path = posixpath.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
        else:
            fd, self.local_path = tempfile.mkstemp(prefix="retl-file-", suffix=".tmp")
            os.close(fd)

    def commit(self) -> int:
        """Put the file in place, durably; returns its size in bytes."""
        size = os.path.getsize(self.local_path)
        try:
            if self.storage.local:
                fd = os.open(self.local_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(self.local_path, self.path)
                dir_fd = os.open(posixpath.dirname(self.path), os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            else:
                with self.storage.failing(f"uploading {self.storage.url_of(self.path)}"):
                    self.storage.fs.put_file(self.local_path, self.path)
        finally:
            self.abort()
        return size

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local_path)


class Storage:
    """The folder of a file destination's `url`, with the few operations its runs need."""

    def __init__(self, name: str, url: str, config: FileConfig) -> None:
        self.name = name
        self.url = url.rstrip("/") or url
        scheme = _scheme(url)
        if scheme is None or scheme == "file":
            self.fs: fsspec.AbstractFileSystem = LocalFileSystem()
            self.root = local_folder(url).as_posix()
            self.local = True
            self.url = self.root
            return
        if scheme == "gcs":
            scheme = "gs"
        package, install = _PACKAGES.get(scheme, (scheme, "it"))
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **_options(name, scheme, config))
        except ImportError:
            raise DestinationConfigError(
                name,
                "url",
                f"{scheme}:// needs the Python package {package}, which is not installed",
                f"pip install '{install}'",
            ) from None
        self.root = str(root).rstrip("/")
        self.local = False

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url_of(self, path: str) -> str:
        """A path as the user's URL spells it (for messages and manifests: no credentials)."""
        rel = posixpath.relpath(path, self.root) if path != self.root else ""
        return self.url if rel in ("", ".") else f"{self.url}/{rel}"

    @contextlib.contextmanager
    def failing(self, doing: str) -> Iterator[None]:
        """A storage error as a DestinationError naming the destination and what it was doing.
        Around one filesystem call each: what it raises is the storage's answer (OSError from
        fsspec, botocore's errors for an endpoint it cannot reach...), whose message names no
        credentials (requests are signed in headers)."""
        try:
            yield
        except DestinationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any storage failure fails the batch, named
            reason = f"{type(exc).__name__}: {exc}".strip()
            raise FileStorageError(
                f"destination '{self.name}': {doing}: {reason}. Fix: check that the "
                "bucket or folder exists, that endpoint_url reaches it, and that the "
                "credentials may write it"
            ) from exc

    def stage(self, path: str) -> Staged:
        return Staged(self, path)

    def write_bytes(self, path: str, data: bytes) -> int:
        with self.failing(f"writing {self.url_of(path)}"):
            staged = self.stage(path)
            try:
                with open(staged.local_path, "wb") as fh:
                    fh.write(data)
            except BaseException:
                staged.abort()
                raise
            return staged.commit()

    def read_json(self, path: str) -> dict[str, Any] | None:
        """A JSON file's object, or None where there is no such file."""
        with self.failing(f"reading {self.url_of(path)}"):
            try:
                with self.fs.open(path, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                return None
        loaded = json.loads(data)
        return loaded if isinstance(loaded, dict) else None

    def exists(self, path: str) -> bool:
        with self.failing(f"reading {self.url_of(path)}"):
            return bool(self.fs.exists(path))

    def _entries(self, path: str) -> list[dict[str, Any]]:
        with self.failing(f"listing {self.url_of(path)}"):
            self.fs.invalidate_cache(path)
            try:
                return list(self.fs.ls(path, detail=True))
            except FileNotFoundError:
                return []

    def folders(self, path: str) -> list[str]:
        """Names of the folders in `path`, sorted; none where it does not exist."""
        return sorted(
            posixpath.basename(str(e["name"]).rstrip("/"))
            for e in self._entries(path)
            if e.get("type") == "directory"
        )

    def files(self, path: str) -> list[tuple[str, int]]:
        """(name, size in bytes) of the files in `path`, sorted by name."""
        return sorted(
            (posixpath.basename(str(e["name"])), int(e.get("size") or 0))
            for e in self._entries(path)
            if e.get("type") == "file"
        )

    def open(self, path: str) -> IO[bytes]:
        with self.failing(f"reading {self.url_of(path)}"):
            opened: IO[bytes] = self.fs.open(path, "rb")
            return opened

    def remove(self, path: str, recursive: bool = False) -> None:
        with self.failing(f"removing {self.url_of(path)}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=recursive)
