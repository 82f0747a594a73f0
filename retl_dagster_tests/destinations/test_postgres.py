"""Postgres table destination: real syncs through Dagster into a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import defs_from_yaml, sql

PG_URL = os.environ.get("RETL_TEST_PG_URL")
if not PG_URL and os.environ.get("CI"):
    raise RuntimeError("CI must run the Postgres tests: .ci/run sets RETL_TEST_PG_URL")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="no PostgreSQL: run .ci/start_postgres.sh and export RETL_TEST_PG_URL"
)

DESTINATION = """
destinations:
  pg: {type: postgres, url: "{{ env.RETL_TEST_PG_URL }}", batch_size: 40}
"""


@pytest.fixture
def table() -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield f"public.{name}"
    with sa.create_engine(PG_URL or "").begin() as conn:
        conn.execute(sa.text(f"drop table if exists public.{name}"))


def pg(statement: str) -> list[tuple]:
    with sa.create_engine(PG_URL or "").begin() as conn:
        result = conn.execute(sa.text(statement))
        return [tuple(r) for r in result] if result.returns_rows else []


def sync_yaml(table: str, mode: str = "mirror", delete: str = "delete") -> str:
    return f"""
name: accounts_pg
model: {{table: accounts}}
primary_key: id
destination: pg
object: {table}
mode: {mode}
match: {{column: id, field: account_id}}
mappings:
  - {{from: name, to: name}}
  - {{from: arr, to: arr}}
  - {{from: since, to: customer_since}}
  - {{from: tags, to: tags}}
  - {{from: address, to: address}}
delete_behavior: {delete}
"""


def make_accounts(path: Path, n: int = 100) -> None:
    sql(
        path,
        f"""create or replace table accounts as
        select i as id, 'acct ' || i as name, (i * 1000.25)::decimal(14, 2) as arr,
               timestamptz '2025-01-01 00:00:00+00' + to_days(i::integer) as since,
               ['a', 'b'] as tags, {{'city': 'Lyon', 'zip': i::varchar}} as address
        from range(1, {n + 1}) t(i)""",
    )


def test_mirror_keeps_the_table_equal_to_the_model_with_types(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path)
    defs = defs_from_yaml(DESTINATION, sync_yaml(table))
    first = run_sync(defs, "accounts_pg", instance)
    assert first.status == "succeeded", first.summary
    assert first.summary["succeeded"] == 100
    row = pg(
        f"select account_id, name, arr, customer_since, tags, address from {table} "
        "where account_id = 3"
    )[0]
    assert row[:3] == (3, "acct 3", Decimal("3000.75"))
    assert row[3].isoformat() == "2025-01-04T00:00:00+00:00"
    assert (row[4], row[5]) == (["a", "b"], {"city": "Lyon", "zip": "3"})
    types = dict(
        pg(
            "select column_name, data_type from information_schema.columns "
            f"where table_name = '{table.split('.')[1]}'"
        )
    )
    assert types["arr"] == "numeric" and types["address"] == "jsonb"
    assert types["customer_since"] == "timestamp with time zone"

    sql(warehouse_path, "update accounts set name = 'renamed' where id in (1, 2)")
    sql(warehouse_path, "delete from accounts where id > 95")
    second = run_sync(defs, "accounts_pg", instance)
    assert (second.summary["changed"], second.summary["removed"]) == (2, 5)
    assert pg(f"select count(*) from {table}") == [(95,)]
    assert pg(f"select name from {table} where account_id = 2") == [("renamed",)]


def test_a_value_the_table_refuses_rejects_only_that_record(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path, 50)
    pg(f"""create table {table} (account_id bigint primary key, name varchar(10)
           check (name <> 'acct 13'), arr numeric, customer_since timestamptz, tags jsonb,
           address jsonb)""")
    sql(warehouse_path, "update accounts set name = 'a name that is far too long' where id = 7")
    defs = defs_from_yaml(DESTINATION, sync_yaml(table, mode="upsert"))
    outcome = run_sync(defs, "accounts_pg", instance)
    assert outcome.status == "partial"
    assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (48, 2)
    errors = dict(
        sql(
            warehouse_path,
            "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
        )
    )
    assert "value too long for type character varying(10)" in errors["7"]
    assert "violates check constraint" in errors["13"]
    assert pg(f"select count(*) from {table}") == [(48,)]


def test_concurrent_batches_write_side_by_side_and_still_isolate_a_bad_record(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path, 200)  # 10 batches of 20, 4 in flight
    log = f"{table}_log"
    pg(f"""create table {table} (account_id bigint primary key, name varchar(10)
           check (name <> 'acct 13'), arr numeric, customer_since timestamptz, tags jsonb,
           address jsonb)""")
    # Each write statement notes its connection and when it ran, taking 0.1 s.
    pg(f"create table {log} (pid int, t timestamptz, edge text)")
    pg(f"""create function {table}_slow() returns trigger language plpgsql as $$
           begin insert into {log} values (pg_backend_pid(), clock_timestamp(), 'start');
           perform pg_sleep(0.1);
           insert into {log} values (pg_backend_pid(), clock_timestamp(), 'end');
           return null; end $$""")
    pg(
        f"create trigger slow after insert on {table} for each statement execute function "
        f"{table}_slow()"
    )
    dest = DESTINATION.replace("batch_size: 40}", "batch_size: 20, concurrency: 4}")
    try:
        outcome = run_sync(
            defs_from_yaml(dest, sync_yaml(table, mode="upsert")), "accounts_pg", instance
        )
        assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (199, 1)
        assert pg(f"select count(*) from {table}") == [(199,)]
        spans = pg(
            f"select pid, min(t), max(t) from (select *, row_number() over (partition by pid, edge "
            f"order by t) as n from {log}) s group by pid, n"
        )
        overlapping = [
            (a, b) for a in spans for b in spans if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
        ]
        assert overlapping, f"no two batches were written at the same time: {spans}"
    finally:
        pg(f"drop table if exists {log}")
        pg(f"drop table if exists {table}")
        pg(f"drop function if exists {table}_slow()")


def test_update_never_creates_and_insert_never_touches(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path, 5)
    pg(f"""create table {table} (account_id bigint primary key, name text, arr numeric,
           customer_since timestamptz, tags jsonb, address jsonb)""")
    pg(f"insert into {table} (account_id, name) values (1, 'old'), (2, 'old')")
    update = run_sync(
        defs_from_yaml(DESTINATION, sync_yaml(table, "update", "nothing")), "accounts_pg", instance
    )
    assert (update.summary["succeeded"], update.summary["rejected"]) == (2, 3)
    assert pg(f"select account_id, name from {table} order by 1") == [(1, "acct 1"), (2, "acct 2")]
    rejected = sql(
        warehouse_path,
        "select error from _retl.sync_record_results where status = 'rejected' and _retl_key = '4'",
    )
    assert "update mode never creates rows" in rejected[0][0]


def test_insert_mode_leaves_existing_rows_alone(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path, 3)
    pg(f"""create table {table} (account_id bigint primary key, name text, arr numeric,
           customer_since timestamptz, tags jsonb, address jsonb)""")
    pg(f"insert into {table} (account_id, name) values (1, 'keep me')")
    out = run_sync(
        defs_from_yaml(DESTINATION, sync_yaml(table, "insert", "nothing")), "accounts_pg", instance
    )
    assert out.status == "succeeded"
    assert pg(f"select account_id, name from {table} order by 1") == [
        (1, "keep me"),
        (2, "acct 2"),
        (3, "acct 3"),
    ]


def test_a_table_missing_a_mapped_column_fails_the_run_clearly(
    table: str, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_accounts(warehouse_path, 3)
    pg(f"create table {table} (account_id bigint primary key, name text)")
    out = run_sync(defs_from_yaml(DESTINATION, sync_yaml(table, "upsert")), "accounts_pg", instance)
    assert out.status == "failed"
    assert "has no column(s) arr, customer_since, tags, address" in out.summary["error"]


def test_postgres_needs_an_object_and_a_match() -> None:
    with pytest.raises(Exception, match="field 'match': destination 'pg': postgres needs"):
        defs_from_yaml(
            DESTINATION,
            sync_yaml("public.x").replace("match: {column: id, field: account_id}\n", ""),
        )


def test_a_refused_value_in_a_copied_batch_rejects_only_its_record(table: str) -> None:
    """A batch of COPY_MIN_ROWS or more goes through COPY, whose errors come from psycopg
    itself: still only the bad record is rejected, with PostgreSQL's message."""
    from retl_dagster.destinations.base import Batch, Record
    from retl_dagster.destinations.impl.postgres import PostgresConfig, PostgresDestination
    from retl_dagster.destinations.impl.postgres.client import COPY_MIN_ROWS

    pg(f"create table {table} (account_id bigint primary key, name varchar(5))")
    dest = PostgresDestination("pg", PostgresConfig.model_validate({"url": PG_URL}))
    dest.prepare(table, "account_id", {"name": "VARCHAR"}, "BIGINT")
    n = 2 * COPY_MIN_ROWS
    records = [
        Record("added", str(i), {"name": "too long!" if i == 7 else "ok"}, match_value=i)
        for i in range(n)
    ]
    # A large batch (10,000 rows) with bad rows far apart: halves are applied until each is
    # alone.
    bad = {3, 5_003, 9_998}
    big = [
        Record("added", str(i), {"name": "too long!" if i - n in bad else "ok"}, match_value=i)
        for i in range(n, n + 10_000)
    ]
    try:
        answer = dest.deliver(Batch("s", "r", "upsert", table, records, "account_id"))
        big_answer = dest.deliver(Batch("s", "r", "upsert", table, big, "account_id"))
    finally:
        dest.close()
    assert list(answer.rejected) == ["7"]
    assert "value too long for type character varying(5)" in answer.rejected["7"]
    assert sorted(big_answer.rejected) == sorted(str(n + i) for i in bad)
    assert pg(f"select count(*) from {table}") == [(n - 1 + 10_000 - len(bad),)]


@pytest.mark.parametrize("mode", ["upsert", "insert"])
def test_new_rows_whose_keys_the_table_already_has_are_merged(table: str, mode: str) -> None:
    """Rows new to the sync are COPYed straight into the table; when it already holds some of
    their keys (after a reset, or rows someone else wrote) nothing of that COPY stays and the
    batch is merged as its mode says."""
    from retl_dagster.destinations.base import Batch, Record
    from retl_dagster.destinations.impl.postgres import PostgresConfig, PostgresDestination
    from retl_dagster.destinations.impl.postgres.client import COPY_MIN_ROWS

    pg(f"create table {table} (account_id bigint primary key, name text)")
    pg(f"insert into {table} values (3, 'theirs'), (4, 'theirs')")
    dest = PostgresDestination("pg", PostgresConfig.model_validate({"url": PG_URL}))
    dest.prepare(table, "account_id", {"name": "VARCHAR"}, "BIGINT")
    n = 2 * COPY_MIN_ROWS
    records = [Record("added", str(i), {"name": "ours"}, match_value=i) for i in range(n)]
    fresh = [Record("added", str(i), {"name": "ours"}, match_value=i) for i in range(n, 2 * n)]
    try:
        for batch in (records, fresh):
            answer = dest.deliver(Batch("s", "r", mode, table, batch, "account_id"))
            assert answer.rejected == {}
    finally:
        dest.close()
    assert pg(f"select count(*) from {table}") == [(2 * n,)]
    kept = "theirs" if mode == "insert" else "ours"
    assert pg(f"select name from {table} where account_id in (3, 4)") == [(kept,), (kept,)]
    assert pg(f"select count(*) from {table} where name = 'ours'") == [
        (2 * n - (2 if mode == "insert" else 0),)
    ]


def test_copied_values_arrive_exactly_in_binary_and_as_text(table: str) -> None:
    """A COPY goes in binary where the column types and values allow it, else as text: either
    way every value arrives exactly. A value of another type later in a batch sends the batch
    again as text; a SMALLINT column always goes as text, so a value out of its range is
    refused (binary writing would wrap 70,000 into 4,464)."""
    import datetime as dt

    from retl_dagster.destinations.base import Batch, Record
    from retl_dagster.destinations.impl.postgres import PostgresConfig, PostgresDestination
    from retl_dagster.destinations.impl.postgres.client import COPY_MIN_ROWS

    pg(
        f"""create table {table} (account_id bigint primary key, name text, code varchar(8),
        arr numeric(14, 2), score double precision, active boolean, day date,
        seen timestamp, since timestamptz, ref bigint)"""
    )
    small = f"{table}_small"
    pg(f"create table {small} (account_id bigint primary key, small smallint)")
    fields = {
        "name": "VARCHAR",
        "code": "VARCHAR",
        "arr": "DECIMAL(14,2)",
        "score": "DOUBLE",
        "active": "BOOLEAN",
        "day": "DATE",
        "seen": "TIMESTAMP",
        "since": "TIMESTAMP WITH TIME ZONE",
        "ref": "BIGINT",
    }
    n = 2 * COPY_MIN_ROWS

    def row(i: int) -> dict[str, object]:
        return {
            "name": f"é{i}\t'\"\\",
            "code": f"c{i}",
            "arr": Decimal(i) / 4 if i % 5 else None,
            "score": i / 3,
            "active": i % 2 == 0,
            "day": dt.date(1, 1, 1) + dt.timedelta(days=i),
            "seen": dt.datetime(2026, 1, 2, 3, 4, 5, i),
            "since": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "ref": i * 7,
        }

    def records(start: int) -> list[Record]:
        return [Record("added", str(i), row(i), match_value=i) for i in range(start, start + n)]

    dest = PostgresDestination("pg", PostgresConfig.model_validate({"url": PG_URL}))
    other = PostgresDestination("pg", PostgresConfig.model_validate({"url": PG_URL}))
    try:
        dest.prepare(table, "account_id", fields, "BIGINT")
        binary = records(0)
        assert dest._binary_types(["account_id", *fields], tuple(fields), binary) is not None
        assert dest.deliver(Batch("s", "r", "upsert", table, binary, "account_id")).rejected == {}
        # Text in a BIGINT column after ints: binary writing refuses it mid-COPY, and the
        # batch goes again as text, which PostgreSQL parses.
        mixed = records(n)
        mixed[-1].fields["ref"] = "12"
        assert dest.deliver(Batch("s", "r", "upsert", table, mixed, "account_id")).rejected == {}
        other.prepare(small, "account_id", {"small": "BIGINT"}, "BIGINT")
        out_of_range = [
            Record("added", str(i), {"small": 70_000 if i == 3 else i}, match_value=i)
            for i in range(n)
        ]
        refused = other.deliver(Batch("s", "r", "upsert", small, out_of_range, "account_id"))
        kept = pg(f"select count(*), sum(small) from {small}")
    finally:
        dest.close()
        other.close()
        pg(f"drop table if exists {small}")
    got = pg(
        f"select account_id, name, code, arr, score, active, day, seen, since, ref "
        f"from {table} order by account_id"
    )
    assert len(got) == 2 * n
    for i, values in enumerate(got):
        want = {**row(i), **({"ref": 12} if i == 2 * n - 1 else {})}
        assert values == (i, *want.values()), values
    assert list(refused.rejected) == ["3"] and "smallint" in refused.rejected["3"]
    assert kept == [(n - 1, sum(range(n)) - 3)]
