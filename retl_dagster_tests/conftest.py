from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.definitions import ensure_dbt_manifest
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver

WEBHOOK_SECRET = "test-secret-do-not-log"


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> None:
    # dagster-dbt only prepares the manifest under `dagster dev`; tests do it themselves.
    ensure_dbt_manifest()


@pytest.fixture
def warehouse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("RETL_WAREHOUSE", str(path))
    return path


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    monkeypatch.setenv("TEST_HOOK_SECRET", WEBHOOK_SECRET)
    with WebhookReceiver(secret=WEBHOOK_SECRET) as r:
        monkeypatch.setenv("TEST_HOOK_URL", r.url)
        yield r
