"""Mistakes a new team makes in its first week leave no broken state and get a clear answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.errors import DagsterUnknownPartitionError

from retl_dagster import cli
from retl_dagster.components.sync import job_name
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import WEBHOOK_DESTINATION, defs_from_yaml, sql
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers


def run_rows(path: Path) -> list[tuple[str, str]]:
    [(exists,)] = sql(
        path,
        "select count(*) from information_schema.tables "
        "where table_schema = '_retl' and table_name = 'sync_runs'",
    )
    return sql(path, "select run_id, status from _retl.sync_runs") if exists else []


def test_a_run_on_a_partition_never_added_leaves_no_run_row(
    receiver: object, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 3)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    instance.add_dynamic_partitions("retl_customers_hook_runs", ["20260101T000000Z-aaaaaa"])
    job = defs.resolve_job_def(job_name("customers_hook"))
    try:
        result = job.execute_in_process(
            instance=instance, partition_key="20260102T000000Z-bbbbbb", raise_on_error=False
        )
        assert not result.success
    except DagsterUnknownPartitionError:
        pass  # Dagster refuses it in process; a UI launch reaches the diff asset, which refuses
    assert run_rows(warehouse_path) == []  # nothing left "queued" for ever


def test_replaying_an_unknown_run_creates_nothing(
    receiver: object,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_customers(warehouse_path, 3)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    assert run_sync(defs, "customers_hook", instance).status == "succeeded"
    before = run_rows(warehouse_path)
    # Through the run itself (a UI launch with the replay tag): the run fails, no row is added.
    outcome = run_sync(defs, "customers_hook", instance, replay_of="20200101T000000Z-none00")
    assert outcome.status == "failed"
    assert "has no stored diff to replay" in str(outcome.summary["error"])
    assert run_rows(warehouse_path) == before


def test_the_cli_answers_a_held_warehouse_at_once(
    warehouse_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(warehouse_path, "create table t as select 1 as a")
    monkeypatch.setenv("RETL_LOCK_WAIT_S", "1")
    # A notebook's write connection, in another process.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)",
            str(warehouse_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        out = CliRunner().invoke(cli.main, ["validate"])
        status = CliRunner().invoke(cli.main, ["status"])
    finally:
        holder.kill()
        holder.wait()
    assert out.exit_code == 1
    assert "is locked by" in out.output and "(PID " in out.output
    assert "RETL_LOCK_WAIT_S" in out.output and "ok:" not in out.output
    assert status.exit_code == 0 and "Unknown" in status.output and "is locked by" in status.output
