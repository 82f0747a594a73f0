"""Snowflake as the warehouse: its URL, its secrets, and its types through the real connector
(against fakesnow's server, `RETL_TEST_SNOWFLAKE_URL`)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest

from retl_dagster.common.settings import safe_location
from retl_dagster.engine import warehouse_snowflake
from retl_dagster.engine.warehouse import Warehouse, WarehouseError
from retl_dagster.engine.warehouse_snowflake import SnowflakeWarehouse, connect_args
from retl_dagster_tests.harness import SNOWFLAKE_URL, fresh_snowflake_database, sql

URL = "snowflake://ana@xy12345.eu-west-1/ANALYTICS/MARTS?warehouse=WH&role=REPORTER"


def test_the_url_names_account_database_schema_and_passes_every_other_parameter() -> None:
    args = connect_args(
        URL + "&host=127.0.0.1&port=8080&protocol=http&login_timeout=5"
        "&private_key_file=/keys/rsa.p8&authenticator=SNOWFLAKE_JWT"
    )
    assert args == {
        "account": "xy12345.eu-west-1",
        "user": "ana",
        "database": "ANALYTICS",
        "schema": "MARTS",
        "warehouse": "WH",
        "role": "REPORTER",
        "host": "127.0.0.1",
        "port": 8080,
        "protocol": "http",
        "login_timeout": 5,
        "private_key_file": "/keys/rsa.p8",
        "authenticator": "SNOWFLAKE_JWT",
    }


def test_secrets_come_from_the_environment_and_never_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SF_PASSWORD", "p@ss/word")
    monkeypatch.setenv("SF_PAT", "pat-0123456789")
    url = "snowflake://ana:${SF_PASSWORD}@acct/DB/SC?warehouse=WH"
    assert connect_args(url)["password"] == "p@ss/word"
    pat = "snowflake://ana@acct/DB/SC?authenticator=PROGRAMMATIC_ACCESS_TOKEN&token=${SF_PAT}"
    assert connect_args(pat)["token"] == "pat-0123456789"

    literal = "snowflake://ana:hunter22@acct/DB/SC?token=tok-secret&private_key_file_pwd=kp-secret"
    shown = safe_location(literal)
    assert shown.startswith("snowflake://ana:***@acct/DB/SC?")
    for secret in ("hunter22", "tok-secret", "kp-secret"):
        assert secret not in shown

    monkeypatch.delenv("SF_PAT")
    with pytest.raises(KeyError, match=r"\$\{SF_PAT\}, which is not set. Fix: export SF_PAT"):
        connect_args(pat)


def test_a_url_without_database_and_schema_is_refused_saying_what_it_needs() -> None:
    with pytest.raises(WarehouseError, match="must name the account, the user, the database") as e:
        Warehouse("snowflake://ana:hunter22@acct/ANALYTICS")
    assert "hunter22" not in str(e.value)
    assert "ACCOUNT/DATABASE/SCHEMA" in str(e.value)


def test_an_unreachable_snowflake_is_named_without_its_password() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wh = Warehouse(
        f"snowflake://ana:hunter22@acct/DB/SC?host=127.0.0.1&port={port}&protocol=http"
        "&login_timeout=2&token=tok-secret"
    )
    assert isinstance(wh, SnowflakeWarehouse) and not wh.single_writer
    with pytest.raises(WarehouseError, match="cannot connect to the warehouse") as e:
        wh.open()
    assert "hunter22" not in str(e.value) and "tok-secret" not in str(e.value)
    assert f"port={port}" in str(e.value)


@pytest.fixture
def snowflake_url() -> Iterator[str]:
    if not SNOWFLAKE_URL:
        pytest.skip("no Snowflake: export RETL_TEST_SNOWFLAKE_URL=$(bash .ci/start_fakesnow.sh)")
    with fresh_snowflake_database() as url:
        yield url


def test_snowflake_types_map_as_on_the_other_warehouses(snowflake_url: str) -> None:
    sql(
        snowflake_url,
        """create table things (id number(38,0), price number(12,2), name varchar,
            seen_ntz timestamp_ntz, seen_tz timestamp_tz, ok boolean, ratio float,
            doc variant, tags array, attrs object);
        insert into things select 1, 19.99, 'Zoë''s', '2026-01-02 03:04:05',
            '2026-01-02 03:04:05+02:00', true, 0.5, parse_json('{"a": [1, 2]}'),
            parse_json('["x", "y"]')::array, parse_json('{"k": "v"}')::object""",
    )
    with Warehouse(snowflake_url) as wh:
        types = dict(wh.columns_of("select * from things"))
        # Upper-case names Snowflake folded come back as the YAML spells them: lower case.
        assert list(types) == [
            "id", "price", "name", "seen_ntz", "seen_tz", "ok", "ratio", "doc", "tags", "attrs",
        ]  # fmt: skip
        assert types["id"] == "NUMBER(38,0)" and types["price"] == "NUMBER(12,2)"
        assert types["seen_ntz"] == "TIMESTAMP_NTZ" and types["seen_tz"] == "TIMESTAMP_TZ"
        [batch] = list(wh.stream('select * from things where "id" = ?', [1]))
        row = batch.to_pylist()[0]
        assert row["price"] == Decimal("19.99")  # exact, as DuckDB's DECIMAL
        assert row["name"] == "Zoë's" and row["ok"] is True
        assert row["seen_ntz"] == dt.datetime(2026, 1, 2, 3, 4, 5)
        assert row["seen_tz"] == dt.datetime(2026, 1, 2, 1, 4, 5, tzinfo=dt.UTC)
        # VARIANT, ARRAY and OBJECT arrive as JSON text, as DuckDB's JSON does.
        import json

        assert json.loads(row["doc"]) == {"a": [1, 2]}
        assert json.loads(row["tags"]) == ["x", "y"]
        assert json.loads(row["attrs"]) == {"k": "v"}


def test_creating_retl_s_schema_leaves_the_model_s_schema_current(snowflake_url: str) -> None:
    sql(snowflake_url, "create table people (id number, name varchar)")
    with Warehouse(snowflake_url) as wh:
        wh.execute("create schema if not exists _retl")  # Snowflake: now the current one
        assert wh.fetchall("select count(*) from people") == [(0,)]


def test_a_batch_s_outcomes_arrive_whole_with_nulls_quotes_and_unicode(
    snowflake_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small JSON chunks, so these rows take several INSERTs (large batches do on Snowflake).
    monkeypatch.setattr(warehouse_snowflake, "MAX_JSON_CHARS", 10_000)
    rows = pa.table(
        {
            "_retl_key": [str(i) for i in range(3000)],
            "error": [None, 'it\'s "bad"\nreally', "ünïcode ✓"] + ["x"] * 2997,
            "n": list(range(3000)),
        }
    )
    with Warehouse(snowflake_url) as wh:
        wh.register_arrow("_retl_batch_results", rows)
        wh.register_arrow("_retl_batch_results", rows)  # replaced, not appended
        got = wh.fetchall("select _retl_key, error, n from _retl_batch_results order by n limit 3")
        assert got == [("0", None, 0), ("1", 'it\'s "bad"\nreally', 1), ("2", "ünïcode ✓", 2)]
        assert wh.fetchone("select count(*), sum(n) from _retl_batch_results") == (
            3000,
            sum(range(3000)),
        )
