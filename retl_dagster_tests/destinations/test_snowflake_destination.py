"""Snowflake table destination: batches staged (Parquet, PUT, COPY INTO) and applied to tables
of a fresh database on the fakesnow server, through the real Snowflake connector over HTTP;
one sync end to end through Dagster from a DuckDB model."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import (
    Batch,
    DestinationConfigError,
    DestinationError,
    Record,
    SyncShape,
)
from retl_dagster.destinations.impl.snowflake.client import COPY_MIN_ROWS, SnowflakeDestination
from retl_dagster.destinations.impl.snowflake.stage import column_type, parse_object
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import SNOWFLAKE_URL, defs_from_yaml, fresh_snowflake_database, sql

pytestmark = pytest.mark.skipif(
    not SNOWFLAKE_URL,
    reason="no Snowflake: export RETL_TEST_SNOWFLAKE_URL=$(bash .ci/start_fakesnow.sh)",
)

FIELDS = {
    "name": "VARCHAR",
    "arr": "DECIMAL(14,2)",
    "customer_since": "TIMESTAMP WITH TIME ZONE",
    "tags": "VARCHAR[]",
    "address": "STRUCT(city VARCHAR, zip VARCHAR)",
    "vip": "BOOLEAN",
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One fresh database for the module's tests (each test writes tables of its own)."""
    with fresh_snowflake_database() as database_url:
        # A statement fakesnow fails with HTTP 500 fails in seconds, not after the connector's
        # retries (a NOT NULL violation does: see the module).
        yield database_url + "&network_timeout=30"


@pytest.fixture
def table(url: str) -> str:
    return f"public.t_{secrets.token_hex(4)}"


def destination(url: str, **options: Any) -> SnowflakeDestination:
    built = build_destination("sf", "snowflake", {"url": url, **options})
    assert isinstance(built, SnowflakeDestination)
    return built


def fields(i: int) -> dict[str, Any]:
    return {
        "name": f"acct {i}",
        "arr": Decimal(i) * Decimal("1000.25"),
        "customer_since": dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i),
        "tags": ["a", "b"],
        "address": {"city": "Lyon", "zip": str(i)},
        "vip": i % 2 == 0,
    }


def record(i: int, op: str = "added", **values: Any) -> Record:
    return Record(op, str(i), {**fields(i), **values} if op != "removed" else {}, i)  # type: ignore[arg-type]


def batch(mode: str, table: str, records: list[Record]) -> Batch:
    return Batch("to_sf", "run", mode, table, records, "account_id")


def rows(url: str, table: str, columns: str = "*") -> dict[Any, tuple[Any, ...]]:
    return {r[0]: r for r in sql(url, f"select account_id, {columns} from {table}")}


def test_upsert_creates_the_table_then_mirror_updates_and_deletes(url: str, table: str) -> None:
    with destination(url) as dest:
        dest.prepare(table, "account_id", FIELDS, "BIGINT")
        # 60 rows go through PUT + COPY INTO, 3 through the bound-JSON path: the same values.
        bulk = [record(i) for i in range(1, 61)]
        small = [record(i) for i in range(61, 64)]
        assert len(small) < COPY_MIN_ROWS <= len(bulk)
        for records in (bulk, small):
            assert dest.deliver(batch("upsert", table, records)).rejected == {}
        found = rows(url, table, "name, arr, customer_since, tags, address, vip")
        assert len(found) == 63
        for i in (3, 62):
            row = found[i]
            assert row[1:3] == (f"acct {i}", Decimal(i) * Decimal("1000.25"))
            assert row[3] == dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i)
            assert json.loads(row[4]) == ["a", "b"]
            assert json.loads(row[5]) == {"city": "Lyon", "zip": str(i)}
            assert row[6] is (i % 2 == 0)
        types = dict(
            sql(
                url,
                "select column_name, data_type from information_schema.columns "
                f"where table_name = '{table.split('.')[1].upper()}'",
            )
        )
        assert types == {
            "ACCOUNT_ID": "NUMBER",
            "NAME": "TEXT",
            "ARR": "NUMBER",
            "CUSTOMER_SINCE": "TIMESTAMP_TZ",
            "TAGS": "VARIANT",
            "ADDRESS": "VARIANT",
            "VIP": "BOOLEAN",
        }

        # Mirror: two changed (one through a re-staged table of the same session), five removed
        # (the keys come back as text, as the state keeps them).
        changes = [record(1, "changed", name="renamed"), record(2, "changed", name="renamed")]
        removed = [Record("removed", str(i), {}, str(i)) for i in range(59, 64)]
        assert dest.deliver(batch("mirror", table, changes + removed)).rejected == {}
    found = rows(url, table, "name")
    assert len(found) == 58
    assert (found[1][1], found[2][1], found[3][1]) == ("renamed", "renamed", "acct 3")


def test_insert_leaves_existing_rows_and_update_never_creates(url: str, table: str) -> None:
    sql(
        url,
        f"create table {table} (account_id number(38,0) primary key, name varchar, note varchar)",
    )
    sql(url, f"insert into {table} values (1, 'keep me', 'mine'), (2, 'old', 'mine')")
    with destination(url, create_table=False) as dest:
        dest.prepare(table, "account_id", {"name": "VARCHAR"}, "BIGINT")
        names = [Record("added", str(i), {"name": f"acct {i}"}, i) for i in (1, 3)]
        assert dest.deliver(batch("insert", table, names)).rejected == {}
        assert rows(url, table, "name") == {1: (1, "keep me"), 2: (2, "old"), 3: (3, "acct 3")}

        update = [Record("changed", str(i), {"name": f"new {i}"}, i) for i in (2, 4)]
        result = dest.deliver(batch("update", table, update))
    assert list(result.rejected) == ["4"]
    assert "no row with ACCOUNT_ID = 4" in result.rejected["4"]
    assert "update mode never creates rows" in result.rejected["4"]
    # Columns the sync does not map are left alone.
    assert rows(url, table, "name, note") == {
        1: (1, "keep me", "mine"),
        2: (2, "new 2", "mine"),
        3: (3, "acct 3", None),
    }


def test_clear_sets_the_mapped_fields_to_null_and_fields_left_out_stay(
    url: str, table: str
) -> None:
    sql(
        url,
        f"create table {table} (account_id number(38,0), name varchar, vip boolean, note varchar)",
    )
    sql(
        url,
        f"insert into {table} values (1, 'a', true, 'n'), (2, 'b', false, 'n'), "
        "(3, 'c', true, 'n')",
    )
    with destination(url) as dest:
        dest.prepare(table, "account_id", {"name": "VARCHAR", "vip": "BOOLEAN"}, "BIGINT")
        records = [
            # What the mapper sends for a row that left the model under `delete_behavior: clear`.
            Record("changed", "1", {"name": None, "vip": None}, 1),
            # `sync_nulls: false` leaves a null field out: the column keeps its value. These two
            # shapes stage alike (key, one text column) into two tables of the session.
            Record("changed", "2", {"name": "b2"}, 2),
            Record("changed", "3", {"vip": None}, 3),
        ]
        assert dest.deliver(batch("upsert", table, records)).rejected == {}
    assert rows(url, table, "name, vip, note") == {
        1: (1, None, None, "n"),
        2: (2, "b2", False, "n"),
        3: (3, "c", None, "n"),
    }


@pytest.mark.parametrize("n", [60, 12], ids=["copy", "json"])
def test_a_value_the_table_refuses_rejects_only_its_record(url: str, table: str, n: int) -> None:
    sql(
        url,
        f"create table {table} (account_id number(38,0) primary key, name varchar not null, "
        "arr number(6,2))",
    )
    with destination(url) as dest:
        dest.prepare(table, "account_id", {"name": "VARCHAR", "arr": "DECIMAL(14,2)"}, "BIGINT")
        records = [
            Record("added", str(i), {"name": f"n{i}", "arr": Decimal(i)}, i) for i in range(n)
        ]
        records[7].fields["arr"] = Decimal("123456.5")  # does not fit NUMBER(6,2)
        records[9].fields["name"] = None
        result = dest.deliver(batch("upsert", table, records))
    assert sorted(result.rejected) == ["7", "9"]
    # Snowflake's (here: the emulator's) own message, found by halving the refused batch.
    assert "123456.5" in result.rejected["7"] and "out of range" in result.rejected["7"]
    assert result.rejected["9"] == "NULL result in a non-nullable column NAME"
    assert set(rows(url, table)) == set(range(n)) - {7, 9}


def test_a_value_of_the_wrong_type_is_rejected_with_the_conversion_error(
    url: str, table: str
) -> None:
    sql(url, f"create table {table} (account_id number(38,0), amount number(10,2))")
    with destination(url) as dest:
        dest.prepare(table, "account_id", {"amount": "VARCHAR"}, "BIGINT")
        records = [Record("added", str(i), {"amount": str(i)}, i) for i in range(55)]
        records[40].fields["amount"] = "12 apples"
        result = dest.deliver(batch("upsert", table, records))
    assert list(result.rejected) == ["40"]
    assert "12 apples" in result.rejected["40"]
    assert len(rows(url, table)) == 54


def test_concurrent_batches_write_at_once_each_on_its_own_session(
    url: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with destination(url, concurrency=2) as dest:
        dest.prepare(table, "account_id", FIELDS, "BIGINT")
        # Each batch waits, session in hand, until the other holds one too.
        both = threading.Barrier(2, timeout=30)
        stage = dest._stage

        def stage_together(*args: Any) -> Any:
            both.wait()
            return stage(*args)

        monkeypatch.setattr(dest, "_stage", stage_together)
        batches = [batch("upsert", table, [record(i) for i in range(k, k + 60)]) for k in (0, 100)]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(dest.deliver, batches))
        assert [r.rejected for r in results] == [{}, {}]
        assert len(dest._idle) == 2
    assert len(rows(url, table)) == 120


def test_names_and_types_are_read_as_snowflake_reads_them() -> None:
    assert parse_object("analytics.accounts") == ["ANALYTICS", "ACCOUNTS"]
    assert parse_object('db."Mixed ""Case""".t_1') == ["DB", 'Mixed "Case"', "T_1"]
    assert [parse_object(o) for o in ("accounts", "a.b.c.d", "a-b.c", "a.")] == [None] * 4
    warehouse_types = [
        "DECIMAL(14,2)", "numeric", "BIGINT", "character varying(10)", "UUID",
        "TIMESTAMP WITH TIME ZONE", "timestamp without time zone", "DOUBLE", "BLOB",
        "STRUCT(a INTEGER)", "VARCHAR[]", "jsonb", "NUMBER(38,0)", "TIMESTAMP_NTZ", "OBJECT",
    ]  # fmt: skip
    assert [column_type(t) for t in warehouse_types] == [
        "NUMBER(14,2)", "NUMBER(38,9)", "NUMBER(38,0)", "VARCHAR", "VARCHAR",
        "TIMESTAMP_TZ", "TIMESTAMP_NTZ", "FLOAT", "BINARY",
        "VARIANT", "VARIANT", "VARIANT", "NUMBER(38,0)", "TIMESTAMP_NTZ", "VARIANT",
    ]  # fmt: skip


def test_declaration_and_table_mistakes_are_named(url: str, table: str) -> None:
    with pytest.raises(DestinationConfigError, match="field 'url'.*Fix: use snowflake://"):
        destination("postgresql://u:p@host/db")
    with pytest.raises(DestinationConfigError, match=r"field 'url'.*\$\{RETL_UNSET_PW\}"):
        destination(url.replace("retl:retl@", "retl:${RETL_UNSET_PW}@"))
    with pytest.raises(DestinationConfigError, match="field 'concurrency'"):
        destination(url, concurrency=9)
    [problem] = SnowflakeDestination.check_sync(
        SyncShape("upsert", "accounts", "nothing", "account_id", ["name"])
    )
    assert problem[0] == "object" and "schema.table or database.schema.table" in problem[2]

    sql(url, f"create table {table} (account_id number(38,0), name varchar)")
    with destination(url, create_table=False) as dest:
        with pytest.raises(DestinationError, match=r"has no column\(s\) arr; add them"):
            dest.prepare(table, "account_id", {"name": "VARCHAR", "arr": "DOUBLE"}, "BIGINT")
        with pytest.raises(DestinationError, match="does not exist; create it or set create_table"):
            dest.prepare(table + "_nope", "account_id", {"name": "VARCHAR"}, "BIGINT")
        assert "exists (2 columns)" in dest.check(table)


def test_the_connector_is_imported_only_when_the_type_is_used() -> None:
    probe = (
        "import sys\n"
        "from retl_dagster.destinations import build_destination\n"
        "import retl_dagster.destinations.impl.snowflake.client\n"
        "dest = build_destination('sf', 'snowflake', {'url': sys.argv[1]})\n"
        "assert 'snowflake.connector' not in sys.modules, 'imported at build'\n"
        "print(dest.check().split(' (')[0])\n"
        "assert 'snowflake.connector' in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, SNOWFLAKE_URL or ""],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "logged in to Snowflake as duckdb"


DESTINATION = """
destinations:
  warehouse_tables:
    type: snowflake
    url: "{{ env.SF_DEST_URL }}"
    batch_size: 50
    concurrency: 2
"""


def sync_yaml(table: str) -> str:
    return f"""
name: accounts_sf
model: {{table: accounts}}
primary_key: id
destination: warehouse_tables
object: {table}
mode: mirror
match: {{column: id, field: account_id}}
mappings:
  - {{from: name, to: name}}
  - {{from: arr, to: arr}}
  - {{from: since, to: customer_since}}
  - {{from: tags, to: tags}}
  - {{from: address, to: address}}
delete_behavior: delete
"""


def test_a_sync_from_duckdb_mirrors_a_snowflake_table_and_keeps_its_secret(
    url: str,
    table: str,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = f"pw-{secrets.token_hex(8)}"  # fakesnow takes any password
    monkeypatch.setenv("SF_DEST_PASSWORD", password)
    # The URL reads its password from the environment when it connects (`${NAME}`).
    monkeypatch.setenv("SF_DEST_URL", url.replace("retl:retl@", "retl:${SF_DEST_PASSWORD}@"))
    sql(
        warehouse_path,
        """create or replace table accounts as
        select i as id, 'acct ' || i as name, (i * 1000.25)::decimal(14, 2) as arr,
               timestamptz '2025-01-01 00:00:00+00' + to_days(i::integer) as since,
               ['a', 'b'] as tags, {'city': 'Lyon', 'zip': i::varchar} as address
        from range(1, 101) t(i)""",
    )
    defs = defs_from_yaml(DESTINATION, sync_yaml(table))
    first = run_sync(defs, "accounts_sf", instance)
    assert first.status == "succeeded", first.summary
    assert first.summary["succeeded"] == 100
    row = rows(url, table, "name, arr, customer_since, tags, address")[3]
    assert row[1:4] == ("acct 3", Decimal("3000.75"), dt.datetime(2025, 1, 4, tzinfo=dt.UTC))
    assert json.loads(row[5]) == {"city": "Lyon", "zip": "3"}

    sql(warehouse_path, "update accounts set name = 'renamed' where id in (1, 2)")
    sql(warehouse_path, "delete from accounts where id > 95")
    second = run_sync(defs, "accounts_sf", instance)
    assert (second.summary["changed"], second.summary["removed"]) == (2, 5)
    found = rows(url, table, "name")
    assert len(found) == 95 and found[2][1] == "renamed"

    texts = [repr(first.summary), repr(second.summary), repr(defs.resources)]
    for run in instance.get_runs():
        texts += [repr(e) for e in instance.all_logs(run.run_id)]
    for t in ("sync_runs", "sync_record_results", "accounts_sf__state"):
        texts.append(repr(sql(warehouse_path, f"select * from _retl.{t}")))
    blob = "\n".join(texts)
    assert "accounts_sf" in blob and "SF_DEST_URL" in blob  # the reference, not its value
    assert password not in blob
    assert os.environ["SF_DEST_URL"] not in blob
