"""Build definitions from YAML text the way a project's defs.yaml files are loaded."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
from dagster.components.core.component_tree import ComponentTree

from retl_dagster.components import Alerts, Destinations, Sync
from retl_dagster.components.references import check_references
from retl_dagster.definitions import tell_destination_types
from retl_dagster.runner import SyncOutcome


def defs_from_yaml(destinations: str, *syncs: str, alerts: str | None = None) -> dg.Definitions:
    """`attributes:` bodies of a Destinations component, of Sync components and (optionally)
    of an Alerts component."""
    context = ComponentTree.for_test().load_context
    declared = Destinations.resolve_from_yaml(textwrap.dedent(destinations))
    parts = [declared.build_defs(context)]
    if alerts is not None:
        parts.append(Alerts.resolve_from_yaml(textwrap.dedent(alerts)).build_defs(context))
    components = [Sync.resolve_from_yaml(textwrap.dedent(s)) for s in syncs]
    tell_destination_types([declared, *components])
    parts += [c.build_defs(context) for c in components]
    defs = dg.Definitions.merge(*parts)
    check_references(defs)
    return defs


def evaluate_run_status_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, outcome: SyncOutcome, sensor_name: str
) -> Any:
    """Evaluate a run status (or failure) sensor on the run's real end event, as the daemon
    does; returns what the sensor returned (a RunRequest, a SkipReason or None)."""
    run = instance.get_run_by_id(outcome.result.run_id)
    assert run is not None
    end = [
        e
        for e in outcome.result.all_events
        if e.event_type_value in ("PIPELINE_FAILURE", "PIPELINE_SUCCESS")
    ][-1]
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=end,
        dagster_instance=instance,
        dagster_run=run,
        resources={k: v for k, v in (defs.resources or {}).items() if k == "retl_alerts"},
    )
    sensor = defs.resolve_sensor_def(sensor_name)
    if end.event_type_value == "PIPELINE_FAILURE":
        return sensor(context.for_run_failure())
    return sensor(context)


WEBHOOK_DESTINATION = """
destinations:
  hook:
    type: webhook
    url: "{{ env.TEST_HOOK_URL }}"
    secret: "{{ env.TEST_HOOK_SECRET }}"
    batch_size: 50
    backoff_initial_s: 0.01
    backoff_max_s: 0.2
"""


PG_URL = os.environ.get("RETL_TEST_PG_URL")
if not PG_URL and os.environ.get("CI"):
    raise RuntimeError("CI must run the PostgreSQL tests: .ci/run sets RETL_TEST_PG_URL")

SNOWFLAKE_URL = os.environ.get("RETL_TEST_SNOWFLAKE_URL")
if not SNOWFLAKE_URL and os.environ.get("CI"):
    raise RuntimeError(
        "CI must run the Snowflake tests: .ci/run sets RETL_TEST_SNOWFLAKE_URL (fakesnow)"
    )

BOTH_WAREHOUSES = ("duckdb", "postgres")
"""`WAREHOUSES = BOTH_WAREHOUSES` in a test module runs each of its tests that uses
`warehouse_path` once on a DuckDB file and once on a PostgreSQL database (conftest)."""
ALL_WAREHOUSES = ("duckdb", "postgres", "snowflake")
"""Also on Snowflake (a fresh database on the fakesnow server `RETL_TEST_SNOWFLAKE_URL` names,
reached through the real Snowflake connector over HTTP)."""


def libpq_url(url: str) -> str:
    """A SQLAlchemy `postgresql+psycopg://` URL as libpq takes it."""
    return "postgresql://" + url.split("://", 1)[1]


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server (`RETL_TEST_PG_URL`); yields its
    SQLAlchemy URL and drops it afterwards."""
    assert PG_URL, "no PostgreSQL: run .ci/start_postgres.sh and export RETL_TEST_PG_URL"
    name = f"retl_t_{secrets.token_hex(4)}"
    with psycopg.connect(libpq_url(PG_URL), autocommit=True) as admin:
        admin.execute(f"create database {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(libpq_url(PG_URL), autocommit=True) as admin:
            admin.execute(f"drop database if exists {name} with (force)")


def is_snowflake(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith("snowflake://")


def _snowflake_connect(url: str) -> Any:
    import snowflake.connector

    from retl_dagster.engine.warehouse_snowflake import connect_args

    # As retl's own sessions do: quoted names resolve as unquoted ones (warehouse_snowflake).
    return snowflake.connector.connect(
        **connect_args(url), session_parameters={"QUOTED_IDENTIFIERS_IGNORE_CASE": True}
    )


@contextmanager
def fresh_snowflake_database() -> Iterator[str]:
    """A new, empty database on the test Snowflake (`RETL_TEST_SNOWFLAKE_URL`: the fakesnow
    server .ci/start_fakesnow.sh starts); yields its URL and drops it afterwards."""
    assert SNOWFLAKE_URL, (
        "no Snowflake: export RETL_TEST_SNOWFLAKE_URL=$(bash .ci/start_fakesnow.sh)"
    )
    name = f"RETL_T_{secrets.token_hex(4).upper()}"
    head, rest = SNOWFLAKE_URL.split("://", 1)
    creds_account, path = rest.split("/", 1)
    url = f"{head}://{creds_account}/{name}/" + path.split("/", 1)[1]
    con = _snowflake_connect(url)  # fakesnow creates the database and schema on login
    con.cursor().execute(f"create database if not exists {name}")
    con.close()
    try:
        yield url
    finally:
        # fakesnow cannot drop a database (Snowflake can): its schemas go, which frees the
        # memory their tables held.
        con = _snowflake_connect(url)
        for schema in ("_retl", url.split("/")[-1].split("?")[0]):
            con.cursor().execute(f"drop schema if exists {name}.{schema} cascade")
        con.close()


_SERIES = re.compile(r"generate_series\((\d+),\s*(\d+)\)\s+as\s+t\((\w+)\)", re.IGNORECASE)


def snowflake_sql(statement: str) -> str:
    """The tests' common SQL as Snowflake writes it: generate_series and now()."""

    def series(m: re.Match[str]) -> str:
        lo, hi, col = int(m.group(1)), int(m.group(2)), m.group(3)
        return (
            f"(select row_number() over (order by seq4()) + {lo - 1} as {col} "
            f"from table(generator(rowcount => {hi - lo + 1}))) as t"
        )

    return _SERIES.sub(series, statement).replace("now()", "current_timestamp()")


def sql(target: Path | str, statement: str) -> list[tuple[Any, ...]]:
    """Run SQL in the test's warehouse: a DuckDB file, or a PostgreSQL or Snowflake URL.
    Statements the tests write are the dialects' common subset (generate_series,
    `drop table if exists; create`; on Snowflake generate_series and now() are rewritten)."""
    if is_snowflake(target):
        assert isinstance(target, str)
        con = _snowflake_connect(target)
        try:
            rows: list[tuple[Any, ...]] = []
            for part in snowflake_sql(statement).split(";"):
                if part.strip():
                    cur = con.cursor().execute(part)
                    rows = [tuple(r) for r in cur.fetchall()] if cur.description else rows
            return rows
        finally:
            con.close()
    if isinstance(target, str) and "://" in target:
        with psycopg.connect(libpq_url(target), autocommit=True) as con:
            cur = con.execute(statement.encode())  # bytes: no `%` placeholders
            rows = cur.fetchall() if cur.description else []
            while cur.nextset():  # several statements: the last one's rows
                rows = cur.fetchall() if cur.description else rows
            return rows
    con = duckdb.connect(str(target))
    try:
        return con.execute(statement).fetchall()
    finally:
        con.close()


def rejected_records(target: Path | str) -> list[tuple[str, str]]:
    """(key, error) of every record a sync's runs rejected, by key."""
    return [
        (str(k), str(e))
        for k, e in sql(
            target,
            "select _retl_key, error from _retl.sync_record_results where status = 'rejected' "
            "order by _retl_key",
        )
    ]


def load_warnings(instance: dg.DagsterInstance, sync: str) -> dict[str, str]:
    """id -> warning of the records the last load of `sync` delivered without some field, as
    the load asset's `warning_samples` metadata shows them in the UI."""
    event = instance.get_latest_materialization_event(dg.AssetKey(["retl", sync, "load"]))
    assert event is not None and event.asset_materialization is not None
    table = event.asset_materialization.metadata.get("warning_samples")
    if table is None:
        return {}
    rows = [line.split(" | ") for line in str(table.value).splitlines()[2:]]
    return {r[0].lstrip("| ").strip(): r[2].rstrip(" |").strip() for r in rows}


def dagster_validate(
    module_source: str, module: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Write a code location module and run the real `dagster definitions validate -f` on it, as
    CI runs it on the project (RETL_STRICT unset: the CLI itself makes loading strict). `cwd`
    (default: the module's folder) is on the module's import path."""
    module.write_text(textwrap.dedent(module_source))
    env = {k: v for k, v in os.environ.items() if k != "RETL_STRICT"}
    dagster = str(Path(sys.executable).parent / "dagster")
    return subprocess.run(
        [dagster, "definitions", "validate", "-f", str(module)],
        capture_output=True,
        text=True,
        cwd=cwd or module.parent,
        env=env,
        timeout=240,
    )
