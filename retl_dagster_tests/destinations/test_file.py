"""The file destination's folder form (`url`): Parquet, CSV or JSON Lines files per run, each
run's changes or a full snapshot, part files then a manifest last; in a local folder, on S3
(moto's server, through the real s3fs/botocore client) and on gs:// (fsspec's in-memory
filesystem standing in for gcsfs). The JSON Lines `path:` form keeps its own tests
(test_pools, test_fanout, test_check...)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_classes
from fsspec.registry import known_implementations

from retl_dagster.destinations import DestinationConfigError, build_destination
from retl_dagster.destinations.base import Batch, DestinationError, Record, SyncShape
from retl_dagster.destinations.impl.file import FileDestination
from retl_dagster.destinations.impl.file.exceptions import FileStorageError, SnapshotError
from retl_dagster.destinations.impl.file.runs import decode_schema
from retl_dagster.engine.declarations import check_destination
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes import s3
from retl_dagster_tests.harness import defs_from_yaml, sql

if not s3.S3_URL and os.environ.get("CI"):
    raise RuntimeError("CI must run the S3 tests: .ci/run sets RETL_TEST_S3_URL")
needs_s3 = pytest.mark.skipif(
    not s3.S3_URL, reason="no S3: export RETL_TEST_S3_URL=$(bash .ci/start_moto.sh)"
)

TYPES = {
    "email": "VARCHAR",
    "ltv": "DECIMAL(12,2)",
    "seen_at": "TIMESTAMP WITH TIME ZONE",
    "born": "DATE",
    "visits": "BIGINT",
    "tags": "VARCHAR[]",
    "avatar": "BLOB",
}
RUN1 = "20260101T000000Z-aaaaaa"
RUN2 = "20260102T000000Z-bbbbbb"
RUN3 = "20260103T000000Z-cccccc"
SEEN = dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.UTC)


def rec(i: int, op: str = "added", email: str | None = None) -> Record:
    if op == "removed":
        return Record("removed", str(i))
    return Record(
        op,  # type: ignore[arg-type]
        str(i),
        {
            "email": email or f"user{i}@example.com",
            "ltv": Decimal(f"{i}.25"),
            "seen_at": SEEN,
            "born": dt.date(1990, 1, i),
            "visits": i * 10,
            "tags": ["a", "b"],
            "avatar": bytes([0, i]),
        },
    )


def run(options: dict[str, Any], run_id: str, *batches: list[Record]) -> FileDestination:
    """One run: prepare, a batch each, then the destination closed as a load that succeeded
    closes it (its manifest written)."""
    dest = build_destination("out", "file", options)
    assert isinstance(dest, FileDestination)
    with dest:
        dest.prepare(None, None, TYPES, None)
        for records in batches:
            assert dest.deliver(Batch("people", run_id, "mirror", None, records)).rejected == {}
    return dest


def manifest(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "_manifest.json").read_text())
    return loaded


def read(folder: Path, files: list[dict[str, Any]], man: dict[str, Any]) -> pa.Table:
    """The rows of a manifest's files, read back with pyarrow as a reader would."""
    tables = []
    for entry in files:
        path = folder / entry["path"]
        if man["format"] == "parquet":
            tables.append(pq.read_table(path))
        elif man["format"] == "csv":
            # CSV carries no types: the manifest's schema gives them.
            schema = decode_schema(man["arrow_schema"])
            tables.append(
                pa_csv.read_csv(
                    path,
                    convert_options=pa_csv.ConvertOptions(
                        column_types={f.name: f.type for f in schema},
                        null_values=[""],
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
            )
        else:
            tables.append(pa_json.read_json(path))
    return pa.concat_tables(tables)


def leftovers(root: Path) -> list[str]:
    """Temporary files a write left behind (none: every file is renamed into place whole)."""
    return [p.name for p in root.rglob("*") if p.name.startswith(".")]


# -- local folder: each format --------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_each_run_writes_its_changes_typed_then_a_manifest(fmt: str, tmp_path: Path) -> None:
    options = {"url": str(tmp_path), "format": fmt, "batch_size": 3}
    run(options, RUN1, [rec(1), rec(2), rec(3)], [rec(4, "changed"), rec(5, "removed")])

    folder = tmp_path / "people" / RUN1
    man = manifest(folder)
    ext = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
    assert man["status"] == "complete" and man["run_id"] == RUN1 and man["sync"] == "people"
    assert [(f["path"], f["rows"]) for f in man["files"]] == [
        (f"part-00000{ext}", 3),
        (f"part-00001{ext}", 2),
    ]
    assert man["rows"] == 5
    assert man["ops"] == {"added": 3, "changed": 1, "removed": 1}
    assert [c["name"] for c in man["columns"]] == ["_key", "_op", *TYPES]
    assert all((folder / f["path"]).stat().st_size == f["bytes"] for f in man["files"])
    assert leftovers(tmp_path) == []

    rows = read(folder, man["files"], man).to_pylist()
    assert [(r["_key"], r["_op"]) for r in rows] == [
        ("1", "added"),
        ("2", "added"),
        ("3", "added"),
        ("4", "changed"),
        ("5", "removed"),
    ]
    first, removed = rows[0], rows[4]
    assert removed["email"] is None and removed["ltv"] is None  # a removal carries its key
    assert first["email"] == "user1@example.com" and first["visits"] == 10
    if fmt == "jsonl":
        # JSON as every JSON destination sends it: ISO times, numbers, base64 bytes, arrays.
        assert first["ltv"] == 1.25 and first["tags"] == ["a", "b"]
        assert first["avatar"] == base64.b64encode(b"\x00\x01").decode()
        line = json.loads((folder / man["files"][0]["path"]).read_text().splitlines()[0])
        assert line["seen_at"] == "2026-01-01T12:30:00+00:00" and line["born"] == "1990-01-01"
        return
    table = read(folder, man["files"], man)
    assert table.schema.field("ltv").type == pa.decimal128(12, 2)
    assert table.schema.field("seen_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("born").type == pa.date32()
    assert table.schema.field("visits").type == pa.int64()
    assert first["ltv"] == Decimal("1.25") and first["seen_at"] == SEEN
    assert first["born"] == dt.date(1990, 1, 1)
    assert json.loads(first["tags"]) == ["a", "b"]  # nested values: JSON text
    # Parquet keeps bytes; CSV has no bytes, so they are base64 there.
    assert first["avatar"] == (b"\x00\x01" if fmt == "parquet" else "AAE=")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_snapshot_is_the_previous_one_with_the_runs_changes_applied(
    fmt: str, tmp_path: Path
) -> None:
    options = {"url": f"file://{tmp_path}", "format": fmt, "write": "snapshot", "batch_size": 2}
    run(options, RUN1, [rec(1), rec(2)], [rec(3), rec(4)])
    run(options, RUN2, [rec(1, "changed", email="new@example.com"), rec(2, "removed"), rec(9)])

    first, second = manifest(tmp_path / "people" / RUN1), manifest(tmp_path / "people" / RUN2)
    assert first["rows"] == 4 and first["previous"] is None
    assert second["previous"] == RUN1 and second["ops"] == {"added": 1, "changed": 1, "removed": 1}
    assert second["rows"] == 4 and all(f["rows"] <= 2 for f in second["files"])
    assert [c["name"] for c in second["columns"]] == ["_key", *TYPES]  # no _op in a snapshot

    snap = read(tmp_path / "people" / RUN2, second["files"], second)
    assert "_op" not in snap.column_names
    by_key = {r["_key"]: r for r in snap.to_pylist()}
    assert sorted(by_key) == ["1", "3", "4", "9"]
    assert by_key["1"]["email"] == "new@example.com"
    assert by_key["3"]["email"] == "user3@example.com"
    if fmt != "jsonl":
        assert snap.schema.field("ltv").type == pa.decimal128(12, 2)
        assert by_key["3"]["ltv"] == Decimal("3.25")
    # The run's changes stay beside its snapshot; the earlier snapshot is left as it was.
    changes = read(tmp_path / "people" / RUN2, second["changes"], second).to_pylist()
    assert sorted((r["_key"], r["_op"]) for r in changes) == [
        ("1", "changed"),
        ("2", "removed"),
        ("9", "added"),
    ]
    assert read(tmp_path / "people" / RUN1, first["files"], first).num_rows == 4


def test_a_snapshot_without_an_earlier_one_refuses_changes(tmp_path: Path) -> None:
    """A sync that delivered before this url held its snapshots would make one missing every
    record it does not change: refused, with the fix."""
    dest = build_destination("out", "file", {"url": str(tmp_path), "write": "snapshot"})
    refused = r"no snapshot to apply .*`retl reset people`"
    with pytest.raises(SnapshotError, match=refused), dest:
        dest.prepare(None, None, TYPES, None)
        dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1, "changed")]))
    assert not (tmp_path / "people" / RUN1 / "_manifest.json").exists()


# -- atomicity, interrupted runs ------------------------------------------------------------
@pytest.mark.parametrize("write", ["changes", "snapshot"])
def test_an_interrupted_run_has_no_manifest_until_the_next_run_seals_it(
    write: str, tmp_path: Path
) -> None:
    options = {"url": str(tmp_path), "write": write}
    (tmp_path / "people" / "notes").mkdir(parents=True)  # someone's own folder: left alone
    dest = build_destination("out", "file", options)
    with pytest.raises(RuntimeError, match="worker killed"), dest:
        dest.prepare(None, None, TYPES, None)
        dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1), rec(2)]))
        raise RuntimeError("worker killed")
    interrupted = tmp_path / "people" / RUN1
    assert not (interrupted / "_manifest.json").exists()  # readers do not trust it
    assert list(interrupted.rglob("part-*.parquet"))  # its acknowledged records are on disk

    # The next run lists them in a manifest of their own before its own: the engine marked
    # them synced, so no later run sends them again.
    run(options, RUN2, [rec(1, "changed", email="new@example.com")])
    sealed = manifest(interrupted)
    assert sealed["status"] == "interrupted" and sealed["ops"] == {"added": 2}
    assert (tmp_path / "people" / "notes").is_dir()
    latest = manifest(tmp_path / "people" / RUN2)
    assert latest["status"] == "complete"
    if write == "snapshot":
        assert sealed["rows"] == 2 and latest["previous"] == RUN1
        rows = read(tmp_path / "people" / RUN2, latest["files"], latest).to_pylist()
        assert sorted((r["_key"], r["email"]) for r in rows) == [
            ("1", "new@example.com"),
            ("2", "user2@example.com"),
        ]
    else:
        assert sealed["rows"] == 2 and [f["path"] for f in sealed["files"]] == [
            "part-00000.parquet"
        ]


def test_a_retry_of_a_run_replaces_its_unfinished_folder_and_a_rerun_sorts_last(
    tmp_path: Path,
) -> None:
    options = {"url": str(tmp_path), "batch_size": 2}
    dest = build_destination("out", "file", options)
    with pytest.raises(RuntimeError), dest:
        dest.prepare(None, None, TYPES, None)
        dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1), rec(2)]))
        raise RuntimeError("network gone")
    # The retry resends every record of the run: the unfinished attempt's files go.
    run(options, RUN1, [rec(1), rec(3)], [rec(2)])
    man = manifest(tmp_path / "people" / RUN1)
    assert man["status"] == "complete" and man["rows"] == 3
    assert sorted(p.name for p in (tmp_path / "people" / RUN1).glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    run(options, RUN2, [rec(4)])
    # The first run's partition run again after a later one: a folder that sorts after both.
    run(options, RUN1, [rec(1)])
    folders = sorted(p.name for p in (tmp_path / "people").iterdir())
    assert folders[:2] == [RUN1, RUN2] and folders[2].endswith(f"Z-{RUN1}")
    assert manifest(tmp_path / "people" / folders[2])["run_id"] == RUN1
    assert manifest(tmp_path / "people" / RUN1)["rows"] == 3  # untouched


def test_a_part_that_fails_to_write_leaves_nothing_and_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Any, table: pa.Table, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    dest = build_destination("out", "file", {"url": str(tmp_path)})
    dest.prepare(None, None, TYPES, None)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(FileStorageError, match=r"destination 'out': writing .*No space left"):
        dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1)]))
    assert list((tmp_path / "people" / RUN1).iterdir()) == [
        tmp_path / "people" / RUN1 / "_run.json"
    ]
    assert leftovers(tmp_path) == []


def test_a_value_that_does_not_fit_its_column_is_rejected_alone(tmp_path: Path) -> None:
    dest = build_destination("out", "file", {"url": str(tmp_path)})
    bad = rec(2)
    bad.fields["ltv"] = Decimal("2.125")  # three decimals in a DECIMAL(12,2)
    with dest:
        dest.prepare(None, None, TYPES, None)
        result = dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1), bad, rec(3)]))
    assert list(result.rejected) == ["2"]
    assert "field 'ltv' (DECIMAL(12,2))" in result.rejected["2"]
    man = manifest(tmp_path / "people" / RUN1)
    assert man["rows"] == 2
    assert read(tmp_path / "people" / RUN1, man["files"], man).column("_key").to_pylist() == [
        "1",
        "3",
    ]


def test_test_rows_are_kept_apart_from_the_runs(tmp_path: Path) -> None:
    dest = build_destination("out", "file", {"url": str(tmp_path), "write": "snapshot"})
    with dest:
        dest.prepare(None, None, TYPES, None)
        dest.deliver(Batch("people", "test-row", "mirror", None, [rec(1, "changed")]))
    [folder] = (tmp_path / "people" / "_test_rows").iterdir()
    assert manifest(folder)["test_row"] is True and manifest(folder)["rows"] == 1
    assert [p.name for p in (tmp_path / "people").iterdir()] == ["_test_rows"]


# -- the JSON Lines file (`path`) keeps its shape ----------------------------------------------
def test_path_still_appends_json_lines_of_json_ready_values(tmp_path: Path) -> None:
    dest = build_destination("out", "file", {"path": str(tmp_path / "out.jsonl")})
    # `path` takes the values every JSON destination gets; a folder, the warehouse's own.
    assert dest.native_values is False
    assert build_destination("out", "file", {"url": str(tmp_path)}).native_values is True
    added = Record("added", "1", {"ltv": 1.25, "seen_at": "2026-01-01T12:30:00+00:00"})
    with dest:
        dest.prepare(None, None, TYPES, None)
        dest.deliver(Batch("people", RUN1, "mirror", None, [added, rec(2, "removed")]))
    first, second = (json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines())
    assert first == {
        "sync": "people",
        "run_id": RUN1,
        "batch_id": first["batch_id"],
        "op": "added",
        "id": "1",
        "fields": {"ltv": 1.25, "seen_at": "2026-01-01T12:30:00+00:00"},
    }
    assert second.keys() == {"sync", "run_id", "batch_id", "op", "id"}
    assert list(tmp_path.iterdir()) == [tmp_path / "out.jsonl"]  # no folder, no manifest


def test_check_of_a_local_folder_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "lake" / "exports"
    said = build_destination("out", "file", {"url": f"file://{target}"}).check()
    assert said == (
        f"{target} does not exist yet; {tmp_path} is writable, so the first run creates it "
        "(with its missing directories)"
    )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "lake").write_text("a file, not a folder")
    with pytest.raises(DestinationError, match="is not a directory"):
        build_destination("out", "file", {"url": str(target)}).check()


# -- declarations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({}, "url", "missing"),
        ({"path": "a.jsonl", "url": "s3://b/p"}, "url", "path and url are both set"),
        ({"path": "a.jsonl", "format": "csv"}, "format", "applies to a folder (url)"),
        ({"url": "ftp://host/x"}, "url", "'ftp://' is not a storage"),
        ({"url": "s3://AKIA:secret@bucket/p"}, "url", "holds credentials"),
        ({"url": "s3://"}, "url", "names no bucket"),
        ({"url": "/tmp/x", "format": "csv", "compression": "zstd"}, "compression", "gzip"),
    ],
)
def test_a_declaration_that_cannot_work_names_the_field_and_the_fix(
    options: dict[str, Any], field: str, says: str
) -> None:
    # As the project's definitions load (and `retl validate` reads them), before any run.
    with pytest.raises(DestinationConfigError) as exc:
        check_destination("out", {"type": "file", **options})
    assert exc.value.field == field and says in str(exc.value)
    assert "Fix:" in str(exc.value)
    # A client built from the options directly refuses them too.
    with pytest.raises(DestinationConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        build_destination("out", "file", options)


def test_a_sync_that_the_folder_cannot_hold_is_refused_at_load() -> None:
    shape = SyncShape("events", None, "nothing", None, ["name", "_op"])
    problems = FileDestination.check_declared({"url": "s3://b/p", "write": "snapshot"}, shape)
    assert [p[0] for p in problems] == ["mode", "mappings[2].to"]
    assert FileDestination.check_declared({"path": "x.jsonl"}, shape) == []


# -- gs:// through fsspec ----------------------------------------------------------------------
class FakeGCS(MemoryFileSystem):
    """gcsfs's place in fsspec's registry: in-memory objects, and the options it was built
    with (the credentials gcsfs would be given)."""

    protocol = ("gs", "gcs")
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    built_with: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeGCS.built_with.append(kwargs)
        super().__init__()

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        # As gcsfs: paths are `bucket/key`, without the scheme.
        for scheme in ("gs://", "gcs://"):
            path = path.removeprefix(scheme)
        stripped: str = super()._strip_protocol(path)
        return stripped


@pytest.fixture
def fake_gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeGCS]]:
    monkeypatch.setitem(fsspec_classes, "gs", FakeGCS)
    FakeGCS.store.clear()
    FakeGCS.built_with.clear()
    yield FakeGCS
    FakeGCS.store.clear()


def test_gs_urls_write_through_fsspec_with_the_service_account_key(
    fake_gcs: type[FakeGCS],
) -> None:
    key = {"type": "service_account", "private_key": "gcs-secret-do-not-log"}
    options = {
        "url": "gs://bucket/exports",
        "write": "snapshot",
        "gcs_credentials": json.dumps(key),
    }
    run(options, RUN1, [rec(1), rec(2)])
    assert fake_gcs.built_with[-1]["token"] == key
    names = sorted(p for p in fake_gcs.store if "/people/" in p)
    assert names[-1] == f"/bucket/exports/people/{RUN1}/part-00000.parquet"
    man = json.loads(fake_gcs.store[f"/bucket/exports/people/{RUN1}/_manifest.json"].getvalue())
    assert man["rows"] == 2 and "gcs-secret" not in json.dumps(man)


def test_gs_without_gcsfs_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(fsspec_classes, "gs", raising=False)
    monkeypatch.setitem(
        known_implementations,
        "gs",
        {"class": "retl_no_such_module.GCSFileSystem", "err": "Install gcsfs"},
    )
    with pytest.raises(DestinationConfigError, match=r"pip install 'retl-dagster\[gcs\]'"):
        build_destination("out", "file", {"url": "gs://bucket/p"})


# -- S3 (moto's server) -------------------------------------------------------------------------
def s3_options(bucket: str, **more: Any) -> dict[str, Any]:
    return {
        "url": f"s3://{bucket}/exports",
        "endpoint_url": s3.S3_URL,
        "region": s3.REGION,
        "access_key_id": s3.ACCESS_KEY_ID,
        "secret_access_key": s3.SECRET_ACCESS_KEY,
        **more,
    }


@pytest.fixture
def bucket() -> Iterator[str]:
    with s3.fresh_bucket() as name:
        yield name


@needs_s3
@pytest.mark.parametrize("write", ["changes", "snapshot"])
def test_s3_parquet_runs_put_every_part_before_the_manifest(
    write: str, bucket: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uploads: list[str] = []
    import s3fs

    real_put = s3fs.S3FileSystem.put_file

    def spy(self: Any, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        uploads.append(rpath)
        return real_put(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", spy)
    caplog.set_level(logging.DEBUG)
    options = s3_options(bucket, write=write, batch_size=2)
    run(options, RUN1, [rec(1), rec(2)], [rec(3)])
    run(options, RUN2, [rec(2, "removed"), rec(4)])

    prefix = f"{bucket}/exports/people"
    for run_id in (RUN1, RUN2):
        mine = [u.removeprefix(f"{prefix}/{run_id}/") for u in uploads if f"/{run_id}/" in u]
        assert mine[0] == "_run.json" and mine[-1] == "_manifest.json"
        assert len(mine) == len(set(mine))  # each object put once, whole
    man = json.loads(s3.get(bucket, f"exports/people/{RUN2}/_manifest.json"))
    assert man["status"] == "complete"
    keys = s3.keys(bucket, f"exports/people/{RUN2}/")
    assert [f"exports/people/{RUN2}/{f['path']}" for f in man["files"]] == [
        k for k in keys if "/part-" in k and "_changes" not in k
    ]
    tables = [
        pq.read_table(pa.BufferReader(s3.get(bucket, f"exports/people/{RUN2}/{f['path']}")))
        for f in man["files"]
    ]
    rows = pa.concat_tables(tables).to_pylist()
    if write == "snapshot":
        assert sorted(r["_key"] for r in rows) == ["1", "3", "4"] and man["previous"] == RUN1
    else:
        assert [(r["_key"], r["_op"]) for r in rows] == [("2", "removed"), ("4", "added")]
    assert rows[-1]["ltv"] == Decimal("4.25")
    # The secret is in no object, and in no log line of s3fs/botocore or ours.
    for key in s3.keys(bucket):
        assert s3.SECRET_ACCESS_KEY.encode() not in s3.get(bucket, key)
    assert caplog.records and s3.SECRET_ACCESS_KEY not in caplog.text


@needs_s3
def test_s3_a_missing_bucket_fails_the_batch_naming_it_not_the_secret() -> None:
    dest = build_destination("out", "file", s3_options("retl-no-such-bucket"))
    dest.prepare(None, None, TYPES, None)
    with pytest.raises(FileStorageError) as exc:
        dest.deliver(Batch("people", RUN1, "mirror", None, [rec(1)]))
    message = str(exc.value)
    assert "destination 'out'" in message and "retl-no-such-bucket" in message
    assert s3.SECRET_ACCESS_KEY not in message
    with pytest.raises(
        DestinationError, match="bucket retl-no-such-bucket does not exist"
    ) as check:
        dest.check()
    assert s3.SECRET_ACCESS_KEY not in str(check.value)


@needs_s3
def test_s3_check_reads_the_bucket_and_writes_nothing(bucket: str) -> None:
    dest = build_destination("out", "file", s3_options(bucket))
    assert (
        dest.check() == f"s3://{bucket}/exports: bucket {bucket} is reachable, nothing under it yet"
    )
    assert s3.keys(bucket) == []


# -- end to end: a sync through Dagster ---------------------------------------------------------
def test_a_snapshot_sync_through_dagster_keeps_the_folder_equal_to_the_model(
    instance: dg.DagsterInstance, warehouse_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exports"
    sql(
        warehouse_path,
        """create table customers as
        select i as id, 'user' || i || '@example.com' as email, (i * 10.5)::decimal(12, 2) as ltv,
               timestamptz '2026-01-01 00:00:00+00' + to_days(i::integer) as since
        from range(1, 31) t(i)""",
    )
    defs = defs_from_yaml(
        f"destinations: {{lake: {{type: file, url: '{out}', write: snapshot, batch_size: 8}}}}",
        """
name: customers_lake
model: {table: customers}
primary_key: id
destination: lake
mappings:
  - {from: email, to: email}
  - {from: ltv, to: ltv}
  - {from: since, to: customer_since}
delete_behavior: delete
""",
    )
    first = run_sync(defs, "customers_lake", instance)
    assert first.status == "succeeded", first.summary
    sql(
        warehouse_path,
        "delete from customers where id <= 5; update customers set ltv = 0 where id = 30",
    )
    second = run_sync(defs, "customers_lake", instance)
    assert second.status == "succeeded", second.summary

    # One folder per run, the second run's last: named by its run id, or (when that id sorts
    # before the first's: two runs in one second) by the time it was written, then the id.
    folders = sorted(p for p in (out / "customers_lake").iterdir())
    assert len(folders) == 2
    assert folders[0].name == str(first.summary["run_id"])
    assert folders[1].name.endswith(str(second.summary["run_id"]))
    latest = manifest(folders[-1])
    assert latest["ops"] == {"changed": 1, "removed": 5}
    snap = pq.read_table(folders[-1], columns=["_key", "email", "ltv", "customer_since"])
    assert snap.num_rows == latest["rows"] == 25
    assert snap.schema.field("ltv").type == pa.decimal128(12, 2)
    assert snap.schema.field("customer_since").type == pa.timestamp("us", tz="UTC")
    by_key = {r["_key"]: r for r in snap.to_pylist()}
    assert sorted(by_key, key=int) == [str(i) for i in range(6, 31)]
    assert by_key["30"]["ltv"] == Decimal("0.00") and by_key["6"]["ltv"] == Decimal("63.00")


@needs_s3
def test_a_sync_to_s3_through_dagster_keeps_its_secret_out_of_the_run(
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKE_KEY_ID", s3.ACCESS_KEY_ID)
    monkeypatch.setenv("LAKE_SECRET", s3.SECRET_ACCESS_KEY)
    sql(
        warehouse_path,
        "create table customers as select i as id, 'user' || i || '@example.com' as email "
        "from range(1, 6) t(i)",
    )
    defs = defs_from_yaml(
        f"""
destinations:
  lake:
    type: file
    url: s3://{bucket}/exports
    format: csv
    compression: gzip
    endpoint_url: {s3.S3_URL}
    region: {s3.REGION}
    access_key_id: "{{{{ env.LAKE_KEY_ID }}}}"
    secret_access_key: "{{{{ env.LAKE_SECRET }}}}"
""",
        """
name: customers_lake
model: {table: customers}
primary_key: id
destination: lake
mappings: [{from: email, to: email}]
""",
    )
    outcome = run_sync(defs, "customers_lake", instance)
    assert outcome.status == "succeeded", outcome.summary
    run_id = str(outcome.summary["run_id"])
    man = json.loads(s3.get(bucket, f"exports/customers_lake/{run_id}/_manifest.json"))
    assert man["ops"] == {"added": 5} and man["files"][0]["path"] == "part-00000.csv.gz"
    body = gzip.decompress(s3.get(bucket, f"exports/customers_lake/{run_id}/part-00000.csv.gz"))
    header, *lines = body.decode().splitlines()
    assert header == '"_key","_op","email"' and '"1","added","user1@example.com"' in lines
    logged = "\n".join(
        f"{e.message} {e.dagster_event!r}" for e in instance.all_logs(outcome.result.run_id)
    )
    assert "customers_lake" in logged and s3.SECRET_ACCESS_KEY not in logged
