"""The production instance (deploy/dagster.yaml): Dagster's runs, events and schedules in
PostgreSQL, with the same run and pool limits `retl` writes for one machine; a sync runs on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from retl_dagster.cli import INSTANCE_YAML
from retl_dagster.runner import run_sync
from retl_dagster_tests.conftest import WEBHOOK_SECRET
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    PG_URL,
    WEBHOOK_DESTINATION,
    defs_from_yaml,
    fresh_pg_database,
)
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


def test_the_production_instance_keeps_retls_limits() -> None:
    deploy, local = yaml.safe_load(DEPLOY.read_text()), yaml.safe_load(INSTANCE_YAML)
    for key in ("concurrency", "run_queue", "telemetry"):
        assert deploy[key] == local[key]


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL: export RETL_TEST_PG_URL")
def test_a_sync_runs_on_the_postgres_instance(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: WebhookReceiver,
    warehouse_path: Path,
) -> None:
    assert WEBHOOK_SECRET
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY, home / "dagster.yaml")
    make_customers(warehouse_path, 40)
    with fresh_pg_database() as url:
        monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://" + url.split("://", 1)[1])
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
            outcome = run_sync(defs, "customers_hook", instance)
            assert outcome.status == "succeeded" and outcome.summary["added"] == 40
            run = instance.get_run_by_id(outcome.summary["dagster_run_id"])
            assert run is not None and run.is_success
            assert instance.get_dynamic_partitions("retl_customers_hook_runs") == [
                outcome.summary["run_id"]
            ]
    assert len(receiver.delivered()) == 40
