"""The file destination against pyarrow writing the same rows itself, in the same run.

    .venv/bin/python benchmarks/file_dest.py [--rows 200000] [--batch 10000 100000]

`raw pyarrow`: the rows (Python dicts in memory, as the destination receives them) turned into one
Arrow table by `pa.Table.from_pylist` and written with `pyarrow.parquet.write_table` to a local
file, in one call each: the floor, as a raw COPY is for PostgreSQL. `destination`: the file
destination (`url:` a local folder, Parquet, `write: changes`) taking the same rows as batches of
`--batch` records, one part file each, written durably (temp file, fsync, rename) and sealed with
its manifest. Reported: seconds (median of `--repeat`) and the destination against the floor (>=
0.8x is issue 21's target).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import Batch, Record

FIELDS = {
    "email": "VARCHAR",
    "plan": "VARCHAR",
    "ltv": "DECIMAL(12,2)",
    "since": "TIMESTAMP WITH TIME ZONE",
}
RUN = "20260101T000000Z-bench0"


def rows(n: int) -> list[tuple[Any, ...]]:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return [
        (i, f"user{i}@example.com", "pro" if i % 3 else "free", Decimal(i) / 4, start)
        for i in range(1, n + 1)
    ]


SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("email", pa.string()),
        ("plan", pa.string()),
        ("ltv", pa.decimal128(12, 2)),
        ("since", pa.timestamp("us", tz="UTC")),
    ]
)


def raw(folder: Path, data: list[tuple[Any, ...]]) -> float:
    dicts = [dict(zip(SCHEMA.names, (str(r[0]), *r[1:]), strict=True)) for r in data]
    began = time.perf_counter()
    pq.write_table(pa.Table.from_pylist(dicts, schema=SCHEMA), folder / "raw.parquet")
    return time.perf_counter() - began


def destination(folder: Path, data: list[tuple[Any, ...]], batch: int) -> float:
    records = [Record("added", str(r[0]), dict(zip(FIELDS, r[1:], strict=True))) for r in data]
    dest = build_destination("bench", "file", {"url": str(folder), "batch_size": batch})
    began = time.perf_counter()
    with dest:
        dest.prepare(None, None, FIELDS, "BIGINT")
        for start in range(0, len(records), batch):
            answer = dest.deliver(
                Batch("bench", RUN, "upsert", None, records[start : start + batch])
            )
            assert not answer.rejected, list(answer.rejected.items())[:3]
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = rows(args.rows)

    def fresh() -> Path:
        return Path(tempfile.mkdtemp(prefix="retl-file-bench-"))

    raw(fresh(), data[:1000])  # imports and first-call set-up out of the timings
    floor = statistics.median(raw(fresh(), data) for _ in range(args.repeat))
    print(f"\n{args.rows:,} rows; median of {args.repeat}\n")
    print("| contender | median s | rows/s | vs raw pyarrow |")
    print("|---|---:|---:|---:|")
    print(
        f"| raw pyarrow (from_pylist + write_table) | {floor:.2f} "
        f"| {args.rows / floor:,.0f} | 1.00x |"
    )
    for batch in args.batch:
        took = statistics.median(destination(fresh(), data, batch) for _ in range(args.repeat))
        rate, ratio = args.rows / took, floor / took
        print(f"| destination, batch {batch:,} | {took:.2f} | {rate:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
