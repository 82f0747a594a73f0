"""Build definitions from YAML text the way a project's defs.yaml files are loaded."""

from __future__ import annotations

import os
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
from retl_dagster.runner import SyncOutcome


def defs_from_yaml(destinations: str, *syncs: str, alerts: str | None = None) -> dg.Definitions:
    """`attributes:` bodies of a Destinations component, of Sync components and (optionally)
    of an Alerts component."""
    context = ComponentTree.for_test().load_context
    parts = [Destinations.resolve_from_yaml(textwrap.dedent(destinations)).build_defs(context)]
    if alerts is not None:
        parts.append(Alerts.resolve_from_yaml(textwrap.dedent(alerts)).build_defs(context))
    parts += [Sync.resolve_from_yaml(textwrap.dedent(s)).build_defs(context) for s in syncs]
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

BOTH_WAREHOUSES = ("duckdb", "postgres")
"""`WAREHOUSES = BOTH_WAREHOUSES` in a test module runs each of its tests that uses
`warehouse_path` once on a DuckDB file and once on a PostgreSQL database (conftest)."""


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


def sql(target: Path | str, statement: str) -> list[tuple[Any, ...]]:
    """Run SQL in the test's warehouse: a DuckDB file, or a PostgreSQL URL. Statements the tests
    write are the dialects' common subset (generate_series, `drop table if exists; create`)."""
    if isinstance(target, str) and "://" in target:
        with psycopg.connect(libpq_url(target), autocommit=True) as con:
            cur = con.execute(statement.encode())  # bytes: no `%` placeholders
            rows: list[tuple[Any, ...]] = cur.fetchall() if cur.description else []
            while cur.nextset():  # several statements: the last one's rows
                rows = cur.fetchall() if cur.description else rows
            return rows
    con = duckdb.connect(str(target))
    try:
        return con.execute(statement).fetchall()
    finally:
        con.close()


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
