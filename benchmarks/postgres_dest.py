"""The PostgreSQL destination against a raw COPY of the same rows, in the same run.

    RETL_BENCH_PG_URL=postgresql+psycopg://retl:retl@127.0.0.1:5432/retl_bench \
        python benchmarks/postgres_dest.py [--rows 200000] [--batch 1000 10000 50000]

`raw COPY`: psycopg's COPY of the rows (already Python values in memory) into a fresh table with
a primary key, in one transaction: the floor. `raw binary COPY`: the same in PostgreSQL's binary
format (the destination's own where the types allow), for reference. `destination`: the
PostgreSQL destination's `deliver` of the same rows as `upsert` batches of `--batch` records
(its default is 50,000; 1,000 before), each batch its own transaction, after its `prepare` has
created the table (untimed, as the raw side's CREATE TABLE is). Rounds are interleaved;
reported: seconds (median of the rounds) and each contender against the floor (the median of
each round's ratio; >= 0.8x is issue 21's target).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from decimal import Decimal
from typing import Any

import psycopg
import sqlalchemy as sa

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.postgres import PostgresConfig, PostgresDestination

FIELDS = {
    "email": "VARCHAR",
    "plan": "VARCHAR",
    "ltv": "DECIMAL(12,2)",
    "since": "TIMESTAMP WITH TIME ZONE",
}


def rows(n: int) -> list[tuple[Any, ...]]:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return [
        (i, f"user{i}@example.com", "pro" if i % 3 else "free", Decimal(i) / 4, start)
        for i in range(1, n + 1)
    ]


def libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(False)


def raw_copy(url: str, data: list[tuple[Any, ...]], binary: bool = False) -> float:
    with psycopg.connect(libpq(url)) as conn:
        conn.execute("drop table if exists bench_raw")
        conn.execute(
            "create table bench_raw (id bigint primary key, email text, plan text, "
            "ltv numeric(12,2), since timestamptz)"
        )
        conn.commit()
        began = time.perf_counter()
        statement = "copy bench_raw from stdin" + (" (format binary)" if binary else "")
        with conn.cursor() as cur, cur.copy(statement) as copy:
            if binary:
                copy.set_types(["int8", "text", "text", "numeric", "timestamptz"])
            for row in data:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - began


def destination(url: str, data: list[tuple[Any, ...]], batch: int) -> float:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("drop table if exists bench_dest")
    dest = PostgresDestination(
        "bench", PostgresConfig.model_validate({"url": url, "batch_size": batch})
    )
    records = [
        Record("added", str(r[0]), dict(zip(FIELDS, r[1:], strict=True)), match_value=r[0])
        for r in data
    ]
    # prepare (reflect or create the table: once a run, ~0.1 s) outside the clock, as the raw
    # COPY's CREATE TABLE is: the comparison is of writing the rows.
    dest.prepare("public.bench_dest", "id", FIELDS, "BIGINT")
    began = time.perf_counter()
    for start in range(0, len(records), batch):
        answer = dest.deliver(
            Batch(
                "bench", "r1", "upsert", "public.bench_dest", records[start : start + batch], "id"
            )
        )
        assert not answer.rejected, list(answer.rejected.items())[:3]
    elapsed = time.perf_counter() - began
    dest.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = os.environ["RETL_BENCH_PG_URL"]
    data = rows(args.rows)
    # Interleaved: each round times the raw COPY, then the destination at each batch size, so
    # a slow moment of the machine (or of PostgreSQL's checkpoints) hits both sides alike; the
    # ratio is the median of the rounds' own ratios.
    floors: list[float] = []
    binary: list[float] = []
    took: dict[int, list[float]] = {b: [] for b in args.batch}
    for _ in range(args.repeat):
        floors.append(raw_copy(url, data))
        binary.append(raw_copy(url, data, binary=True))
        for batch in args.batch:
            took[batch].append(destination(url, data, batch))
    floor = statistics.median(floors)
    print(f"\n{args.rows:,} rows; median of {args.repeat} interleaved rounds\n")
    print("| contender | median s | rows/s | vs raw COPY (median of the rounds' ratios) |")
    print("|---|---:|---:|---:|")
    print(f"| raw COPY | {floor:.2f} | {args.rows / floor:,.0f} | 1.00x |")
    fastest = statistics.median(binary)
    ratio = statistics.median(f / t for f, t in zip(floors, binary, strict=True))
    print(f"| raw binary COPY | {fastest:.2f} | {args.rows / fastest:,.0f} | {ratio:.2f}x |")
    for batch in args.batch:
        median_s = statistics.median(took[batch])
        ratio = statistics.median(f / t for f, t in zip(floors, took[batch], strict=True))
        print(
            f"| destination, batch {batch:,} | {median_s:.2f} | {args.rows / median_s:,.0f} "
            f"| {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
