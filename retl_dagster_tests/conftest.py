from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import filelock
import pytest

from retl_dagster.common.settings import DBT_MANIFEST
from retl_dagster.definitions import ensure_dbt_manifest
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    PG_URL,
    SNOWFLAKE_URL,
    fresh_pg_database,
    fresh_snowflake_database,
)

WEBHOOK_SECRET = "test-secret-do-not-log"

# A broken declaration fails loading in tests, as in CI (tests of isolation turn it off).
os.environ.setdefault("RETL_STRICT", "1")
# Destinations' shared request budgets live in a file of this test session, not in data/.
os.environ.setdefault(
    "RETL_RATE_LIMITS", os.path.join(tempfile.mkdtemp(prefix="retl-budgets-"), "budgets.sqlite")
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module that sets WAREHOUSES runs its warehouse tests on each of them.
    kinds = getattr(metafunc.module, "WAREHOUSES", None)
    # `@pytest.mark.warehouses("duckdb")`: a test about one warehouse runs on it alone.
    only = metafunc.definition.get_closest_marker("warehouses")
    if kinds and only is not None:
        kinds = tuple(k for k in kinds if k in only.args)
    if kinds and "warehouse_path" in metafunc.fixturenames:
        metafunc.parametrize("warehouse_path", kinds, indirect=True)


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> None:
    # dagster-dbt only prepares the manifest under `dagster dev`; tests do it themselves, one
    # test process at a time (the suite runs in several, pytest-xdist).
    DBT_MANIFEST.parent.mkdir(exist_ok=True)
    with filelock.FileLock(DBT_MANIFEST.parent / ".manifest.lock"):
        ensure_dbt_manifest()


@pytest.fixture
def warehouse_path(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path | str]:
    """The test's warehouse, set as `RETL_WAREHOUSE`: a fresh DuckDB file, or (parametrised
    with `harness.BOTH_WAREHOUSES` / `ALL_WAREHOUSES`) a fresh PostgreSQL or Snowflake
    database's URL."""
    if getattr(request, "param", "duckdb") == "duckdb":
        path = tmp_path / "warehouse.duckdb"
        monkeypatch.setenv("RETL_WAREHOUSE", str(path))
        yield path
        return
    if request.param == "snowflake":
        if not SNOWFLAKE_URL:
            pytest.skip(
                "no Snowflake: export RETL_TEST_SNOWFLAKE_URL=$(bash .ci/start_fakesnow.sh)"
            )
        with fresh_snowflake_database() as url:
            monkeypatch.setenv("RETL_WAREHOUSE", url)
            yield url
        return
    if not PG_URL:
        pytest.skip("no PostgreSQL: run .ci/start_postgres.sh and export RETL_TEST_PG_URL")
    with fresh_pg_database() as url:
        monkeypatch.setenv("RETL_WAREHOUSE", url)
        yield url


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
