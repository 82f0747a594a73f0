"""Parquet, CSV and JSON Lines: writing part files in a stream and reading them back.

Parquet and CSV go through pyarrow (its Parquet writer and its CSV writer and reader), a
chunk being an Arrow table. JSON Lines rows are JSON values already (encoded as every JSON
destination encodes them), so a chunk is a list of dicts, written with orjson: a JSON Lines
file read back for a snapshot is re-emitted as the JSON it holds, never through Arrow types.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, ClassVar, Protocol, TypeAlias

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from retl_dagster.destinations.impl.file.arrow_types import KEY, OP

Chunk: TypeAlias = pa.Table | list[dict[str, Any]]


class KeySet:
    """Keys a run changed: a set for JSON Lines rows, an Arrow array for Arrow's filters."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys: set[str] = set(keys)

    def update(self, keys: Iterable[str]) -> None:
        self.keys.update(keys)
        self.__dict__.pop("arrow", None)

    @functools.cached_property
    def arrow(self) -> pa.Array:
        return pa.array(sorted(self.keys), pa.string())


class PartWriter(Protocol):
    def write(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


def _codec(compression: str) -> str | None:
    return None if compression == "none" else compression


class FileFormat(ABC):
    name: ClassVar[str]
    extension: ClassVar[str]

    def ext(self, compression: str) -> str:
        """The file name extension, `.gz` added for a compressed stream."""
        return self.extension

    @abstractmethod
    def open_writer(self, local_path: str, schema: pa.Schema, compression: str) -> PartWriter:
        """A writer of one file at `local_path` (a local file: see storage.Staged)."""

    @abstractmethod
    def read(
        self, source: IO[bytes], schema: pa.Schema, compression: str, rows: int
    ) -> Iterator[Chunk]:
        """The file's rows, `rows` at a time, typed as `schema` (the manifest's) says."""

    @abstractmethod
    def rows(self, chunk: Chunk) -> int: ...

    @abstractmethod
    def values(self, chunk: Chunk, column: str) -> list[Any]: ...

    @abstractmethod
    def slice(self, chunk: Chunk, start: int, stop: int) -> Chunk: ...

    @abstractmethod
    def without_keys(self, chunk: Chunk, keys: KeySet) -> Chunk:
        """The rows whose `_key` is not among `keys`."""

    @abstractmethod
    def with_ops(self, chunk: Chunk, ops: Sequence[str]) -> Chunk:
        """The rows whose `_op` is one of `ops`."""

    @abstractmethod
    def conform(self, chunk: Chunk, schema: pa.Schema) -> Chunk:
        """The rows with `schema`'s columns: others dropped, missing ones null (a field the
        sync mapped since the rows were written), types cast to the current ones."""


class _ArrowFormat(FileFormat):
    def rows(self, chunk: Chunk) -> int:
        assert isinstance(chunk, pa.Table)
        return int(chunk.num_rows)

    def values(self, chunk: Chunk, column: str) -> list[Any]:
        assert isinstance(chunk, pa.Table)
        values: list[Any] = chunk.column(column).to_pylist()
        return values

    def slice(self, chunk: Chunk, start: int, stop: int) -> Chunk:
        assert isinstance(chunk, pa.Table)
        return chunk.slice(start, max(0, stop - start))

    def without_keys(self, chunk: Chunk, keys: KeySet) -> Chunk:
        assert isinstance(chunk, pa.Table)
        if not keys.keys:
            return chunk
        return chunk.filter(pc.invert(pc.is_in(chunk.column(KEY), value_set=keys.arrow)))

    def with_ops(self, chunk: Chunk, ops: Sequence[str]) -> Chunk:
        assert isinstance(chunk, pa.Table)
        return chunk.filter(pc.is_in(chunk.column(OP), value_set=pa.array(list(ops))))

    def conform(self, chunk: Chunk, schema: pa.Schema) -> Chunk:
        assert isinstance(chunk, pa.Table)
        n = chunk.num_rows
        arrays = []
        for f in schema:
            if f.name in chunk.column_names:
                column = chunk.column(f.name)
                arrays.append(column if column.type == f.type else column.cast(f.type))
            else:
                arrays.append(pa.nulls(n, f.type))
        return pa.Table.from_arrays(arrays, schema=schema)


class _ParquetWriter:
    def __init__(self, local_path: str, schema: pa.Schema, compression: str) -> None:
        self.writer = pq.ParquetWriter(local_path, schema, compression=_codec(compression))

    def write(self, chunk: Chunk) -> None:
        assert isinstance(chunk, pa.Table)
        self.writer.write_table(chunk)

    def close(self) -> None:
        self.writer.close()


class ParquetFormat(_ArrowFormat):
    name = "parquet"
    extension = ".parquet"

    def open_writer(self, local_path: str, schema: pa.Schema, compression: str) -> PartWriter:
        return _ParquetWriter(local_path, schema, compression)

    def read(
        self, source: IO[bytes], schema: pa.Schema, compression: str, rows: int
    ) -> Iterator[Chunk]:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=rows):
            yield pa.Table.from_batches([batch])


class _CsvWriter:
    def __init__(self, local_path: str, schema: pa.Schema, compression: str) -> None:
        self.stream = pa.output_stream(local_path, compression=_codec(compression))
        self.writer = pa_csv.CSVWriter(self.stream, schema)

    def write(self, chunk: Chunk) -> None:
        assert isinstance(chunk, pa.Table)
        self.writer.write_table(chunk)

    def close(self) -> None:
        self.writer.close()
        self.stream.close()


class CsvFormat(_ArrowFormat):
    """A header line, then pyarrow's CSV: text quoted, an empty field is null, `""` the empty
    string; timestamps in ISO 8601 (`Z` where they have a time zone)."""

    name = "csv"
    extension = ".csv"

    def ext(self, compression: str) -> str:
        return ".csv.gz" if compression == "gzip" else ".csv"

    def open_writer(self, local_path: str, schema: pa.Schema, compression: str) -> PartWriter:
        return _CsvWriter(local_path, schema, compression)

    def read(
        self, source: IO[bytes], schema: pa.Schema, compression: str, rows: int
    ) -> Iterator[Chunk]:
        stream = pa.input_stream(source, compression=_codec(compression))
        reader = pa_csv.open_csv(
            stream,
            convert_options=pa_csv.ConvertOptions(
                column_types={f.name: f.type for f in schema},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])


class _JsonlWriter:
    def __init__(self, local_path: str, compression: str) -> None:
        self.stream = pa.output_stream(local_path, compression=_codec(compression))

    def write(self, chunk: Chunk) -> None:
        assert isinstance(chunk, list)
        self.stream.write(b"".join(orjson.dumps(row) + b"\n" for row in chunk))

    def close(self) -> None:
        self.stream.close()


class JsonlFormat(FileFormat):
    """One JSON object a line: `_key`, `_op` in change files, then every field."""

    name = "jsonl"
    extension = ".jsonl"

    def ext(self, compression: str) -> str:
        return ".jsonl.gz" if compression == "gzip" else ".jsonl"

    def open_writer(self, local_path: str, schema: pa.Schema, compression: str) -> PartWriter:
        return _JsonlWriter(local_path, compression)

    def read(
        self, source: IO[bytes], schema: pa.Schema, compression: str, rows: int
    ) -> Iterator[Chunk]:
        stream = pa.input_stream(source, compression=_codec(compression))
        chunk: list[dict[str, Any]] = []
        for line in stream:
            if line.strip():
                chunk.append(orjson.loads(line))
            if len(chunk) >= rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def rows(self, chunk: Chunk) -> int:
        return len(chunk)

    def values(self, chunk: Chunk, column: str) -> list[Any]:
        assert isinstance(chunk, list)
        return [row.get(column) for row in chunk]

    def slice(self, chunk: Chunk, start: int, stop: int) -> Chunk:
        assert isinstance(chunk, list)
        return chunk[start:stop]

    def without_keys(self, chunk: Chunk, keys: KeySet) -> Chunk:
        assert isinstance(chunk, list)
        return [row for row in chunk if row.get(KEY) not in keys.keys]

    def with_ops(self, chunk: Chunk, ops: Sequence[str]) -> Chunk:
        assert isinstance(chunk, list)
        return [row for row in chunk if row.get(OP) in ops]

    def conform(self, chunk: Chunk, schema: pa.Schema) -> Chunk:
        assert isinstance(chunk, list)
        names = schema.names
        return [{n: row.get(n) for n in names} for row in chunk]


FORMATS: dict[str, FileFormat] = {f.name: f for f in (ParquetFormat(), CsvFormat(), JsonlFormat())}
