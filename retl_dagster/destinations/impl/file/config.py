from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self

import pydantic

from retl_dagster.destinations.base import DestinationConfig, Problem

Format = Literal["parquet", "csv", "jsonl"]
WriteMode = Literal["changes", "snapshot"]

MAX_ROWS_PER_FILE = 1_000_000
DEFAULT_ROWS_PER_FILE = 50_000
"""Records per part file (one batch each) when `url` is set: a part is written, closed and
uploaded before its records are acknowledged, so this bounds what a run holds in memory."""
DEFAULT_APPEND_BATCH = 1000
"""Records per append to the JSON Lines file of `path`."""

COMPRESSIONS: dict[str, tuple[str, ...]] = {
    # pyarrow's Parquet codecs (compression inside the file, per column chunk).
    "parquet": ("snappy", "zstd", "gzip", "brotli", "lz4", "none"),
    # A compressed stream around the whole file (`.csv.gz`, `.jsonl.gz`).
    "csv": ("none", "gzip"),
    "jsonl": ("none", "gzip"),
}
DEFAULT_COMPRESSION: dict[str, str] = {"parquet": "snappy", "csv": "none", "jsonl": "none"}

SCHEMES = ("s3", "gs", "gcs", "file")
"""URL schemes `url` accepts; anything without `://` is a local folder."""

FOLDER_ONLY = (
    "url",
    "format",
    "write",
    "compression",
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "gcs_credentials",
)
"""Options of the folder form (`url`); the JSON Lines form (`path`) takes none of them."""

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class FileConfig(DestinationConfig):
    """Either `path` (one JSON Lines file each delivered record is appended to) or `url` (a
    folder, local or in a bucket, where each run writes Parquet, CSV or JSON Lines files and a
    manifest)."""

    path: str | None = None
    """JSON Lines file to append to; a relative path is under the data dir (`RETL_DATA_DIR`,
    default `<project>/data`)."""
    url: str | None = None
    """Folder the runs are written under: `s3://bucket/prefix`, `gs://bucket/prefix`,
    `file:///absolute/folder`, or a local folder (relative: under the data dir). Each sync
    writes to `<url>/<sync>/`."""
    format: Format = "parquet"
    write: WriteMode = "changes"
    """`changes`: each run writes the records it added, changed and removed, with an `_op`
    column. `snapshot`: each run writes the whole current set (the previous snapshot with the
    run's changes applied)."""
    compression: str | None = None
    """Parquet: snappy (default), zstd, gzip, brotli, lz4 or none. CSV and JSON Lines: none
    (default) or gzip (`.csv.gz`, `.jsonl.gz`)."""
    batch_size: int | None = pydantic.Field(default=None, ge=1, le=MAX_ROWS_PER_FILE)
    """Records per append (`path`, default 1000), or per part file (`url`, default 50000)."""
    endpoint_url: str | None = None
    """S3-compatible storage other than AWS (MinIO, Cloudflare R2, a local emulator)."""
    region: str | None = None
    """The S3 bucket's region (default: the AWS configuration's)."""
    access_key_id: pydantic.SecretStr | None = None
    """S3 credentials, from the environment; without them the AWS default chain (the
    `AWS_*` variables, `~/.aws`, the instance's role) is used."""
    secret_access_key: pydantic.SecretStr | None = None
    session_token: pydantic.SecretStr | None = None
    gcs_credentials: pydantic.SecretStr | None = None
    """GCS: a service account key (its JSON text), from the environment; without it Google's
    application default credentials are used."""

    @pydantic.model_validator(mode="after")
    def _one_form(self) -> Self:
        problems = option_problems(
            {k: getattr(self, k) for k in self.model_fields_set if getattr(self, k) is not None}
        )
        if problems:
            field, problem, fix = problems[0]
            raise ValueError(f"{field}: {problem}. Fix: {fix}")
        return self

    @property
    def compression_or_default(self) -> str:
        return (self.compression or DEFAULT_COMPRESSION[self.format]).lower()


def _templated(value: Any) -> bool:
    """A value Dagster renders later (an environment reference): not checkable yet."""
    return isinstance(value, str) and "{{" in value


def option_problems(options: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the file destination's declared options, as (field, problem, fix):
    exactly one of `path` and `url`, the folder options only with `url`, a URL this
    destination can write, a compression its format has."""
    has_path = options.get("path") is not None
    has_url = options.get("url") is not None
    if has_path and has_url:
        return [
            (
                "url",
                "path and url are both set",
                "keep path (append JSON Lines to one file) or url (a folder of Parquet, CSV or "
                "JSON Lines files per run), not both",
            )
        ]
    if not has_path and not has_url:
        return [
            (
                "url",
                "missing",
                "set url (a folder: s3://bucket/prefix, gs://bucket/prefix or a local folder) "
                "or path (one JSON Lines file to append to)",
            )
        ]
    if has_path:
        extra = [k for k in FOLDER_ONLY if options.get(k) is not None]
        if extra:
            return [
                (
                    extra[0],
                    f"{extra[0]} applies to a folder (url), and this destination appends to "
                    "the JSON Lines file of path",
                    f"replace path with url: <folder> to write files per run, or remove {extra[0]}",
                )
            ]
        return []
    url = options["url"]
    if not isinstance(url, str) or not url.strip():
        return [("url", "must be a folder's URL or path", "e.g. url: s3://my-bucket/retl")]
    if not _templated(url):
        m = _SCHEME.match(url)
        scheme = m.group(1).lower() if m else None
        if scheme is not None and scheme not in SCHEMES:
            return [
                (
                    "url",
                    f"'{scheme}://' is not a storage this destination writes",
                    "use s3://bucket/prefix, gs://bucket/prefix, file:///folder or a local folder",
                )
            ]
        if scheme in ("s3", "gs", "gcs"):
            rest = url[m.end() :] if m else ""
            if "@" in rest.split("/", 1)[0]:
                return [
                    (
                        "url",
                        "holds credentials",
                        "remove them from the URL; set access_key_id / secret_access_key "
                        '(S3) or gcs_credentials (GCS) from the environment: "{{ env.X }}"',
                    )
                ]
            if not rest.strip("/"):
                return [("url", "names no bucket", f"e.g. url: {scheme}://my-bucket/retl")]
    fmt = options.get("format", "parquet")
    compression = options.get("compression")
    if isinstance(fmt, str) and fmt in COMPRESSIONS and isinstance(compression, str):
        allowed = COMPRESSIONS[fmt]
        if not _templated(compression) and compression.lower() not in allowed:
            return [
                (
                    "compression",
                    f"{fmt} files cannot be compressed with '{compression}'",
                    f"use one of {', '.join(allowed)}",
                )
            ]
    return []
