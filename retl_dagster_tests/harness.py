"""Build definitions from YAML text the way a project's defs.yaml files are loaded."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
from dagster.components.core.component_tree import ComponentTree

from retl_dagster.components import Alerts, Destinations, Sync
from retl_dagster.components.references import check_references


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
