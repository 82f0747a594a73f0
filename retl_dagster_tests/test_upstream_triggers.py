"""`run_after:` a dbt Cloud job / a Fivetran connector: the job run / connector sync finishes in a
fake dbt Cloud / Fivetran API, dagster-dbt's / dagster-fivetran's polling sensor records its
models' / tables' materialisations, and the retl sync's sensor requests one run, which delivers.
Plus the declarations' errors."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pydantic
import pytest
import requests
import yaml
from dagster.components.core.component_tree import ComponentTree

from retl_dagster.common.settings import DBT_MANIFEST
from retl_dagster.components.upstreams import FIVETRAN_RESOURCE, UpstreamConfigError, Upstreams
from retl_dagster.engine.config import SyncConfig, explain
from retl_dagster_tests.fakes.dbt_cloud import FakeDbtCloud
from retl_dagster_tests.fakes.fivetran import FakeFivetran
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import WEBHOOK_DESTINATION, defs_from_yaml
from retl_dagster_tests.test_sync_e2e import make_customers

SYNC = """
name: after_dbt
model: {table: customers}
primary_key: id
destination: hook
mappings: [{from: email, to: email}]
run_after: {dbt_cloud_job: 42}
"""


def upstreams(fake: FakeDbtCloud) -> Upstreams:
    return Upstreams.resolve_from_yaml(
        textwrap.dedent(f"""
        dbt_cloud:
          account_id: {fake.account_id}
          project_id: {fake.project_id}
          environment_id: {fake.environment_id}
          access_url: {fake.url}
        """)
    )


@pytest.fixture
def dbt_cloud(monkeypatch: pytest.MonkeyPatch) -> FakeDbtCloud:
    manifest = json.loads(DBT_MANIFEST.read_text())
    with FakeDbtCloud(manifest) as fake:
        monkeypatch.setenv("DBT_CLOUD_TOKEN", fake.token)
        fake.add_job(42, "nightly build")
        fake.add_job(43, "hourly staging")
        yield fake


def test_a_dbt_cloud_job_run_starts_the_sync(
    dbt_cloud: FakeDbtCloud,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 4)
    component = upstreams(dbt_cloud)
    workspace = component.dbt_cloud_workspace()
    defs = dg.Definitions.merge(
        defs_from_yaml(WEBHOOK_DESTINATION, SYNC),
        component.build_defs(ComponentTree.for_test().load_context),
    )
    # dbt Cloud's models are assets, keyed by the project's translator.
    assert defs.resolve_assets_def(dg.AssetKey(["orders"]))
    repo = defs.get_repository_def()
    polling = defs.resolve_sensor_def("dbt_cloud_11_22_33__run_status_sensor")
    retl = defs.resolve_sensor_def("retl_after_dbt_run_after")
    cursors: dict[str, str | None] = {"poll": None, "retl": None}

    def poll() -> None:
        """dagster-dbt's polling sensor, as the daemon runs it: its events go to the instance."""
        context = dg.build_sensor_context(
            instance=instance, cursor=cursors["poll"], repository_def=repo
        )
        result = polling(context)
        cursors["poll"] = context.cursor
        for event in result.asset_events:
            instance.report_runless_asset_event(event)

    def tick() -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=instance,
            cursor=cursors["retl"],
            resources={"retl_dbt_cloud": workspace},
        ) as context:
            result = retl(context)
        assert isinstance(result, dg.SensorResult)
        cursors["retl"] = result.cursor
        return result

    poll()
    assert "baseline" in str(tick().skip_reason)
    dbt_cloud.finish_job_run(43, ["orders"])  # another job: not this sync's
    poll()
    assert instance.fetch_materializations(dg.AssetKey(["orders"]), limit=5).records
    assert not tick().run_requests
    run_id = dbt_cloud.finish_job_run(42, ["orders", "users"])
    poll()
    result = tick()
    [request] = result.run_requests  # two models, one dbt Cloud run: one sync run
    assert request.run_key == f"dbt_cloud:{run_id}"
    assert request.tags["retl/trigger"] == f"run_after:dbt_cloud:{run_id}"
    assert not tick().run_requests
    [add] = result.dynamic_partitions_requests
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    outcome = defs.resolve_job_def("sync_after_dbt").execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert outcome.success and len(receiver.delivered()) == 4
    # The service token is read from the environment in the run: the resource's config (what
    # the UI and run config show) holds only the variable's name.
    shown = repr(defs.resources["retl_dbt_cloud"]) + repr(workspace.model_dump())
    assert dbt_cloud.token not in shown and "DBT_CLOUD_TOKEN" in shown


def test_dbt_cloud_refuses_a_wrong_token(
    dbt_cloud: FakeDbtCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBT_CLOUD_TOKEN", "dbtc_wrong")
    with pytest.raises(UpstreamConfigError, match="dbt_cloud: cannot read project 22.*Fix"):
        upstreams(dbt_cloud).build_defs(ComponentTree.for_test().load_context)
    assert dbt_cloud.count("/jobs", 401) >= 1


def test_a_missing_token_names_the_variable(
    dbt_cloud: FakeDbtCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBT_CLOUD_TOKEN")
    with pytest.raises(UpstreamConfigError, match="dbt_cloud.token_env: .*DBT_CLOUD_TOKEN"):
        upstreams(dbt_cloud).dbt_cloud_workspace()


@pytest.mark.parametrize(
    "run_after",
    ["{}", "{dbt_cloud_job: 42, fivetran_connector: warn_enormous}", "{dbt_cloud: 42}"],
)
def test_run_after_needs_exactly_one_upstream(run_after: str) -> None:
    raw = yaml.safe_load(SYNC.replace("{dbt_cloud_job: 42}", run_after))
    with pytest.raises(pydantic.ValidationError) as info:
        SyncConfig.model_validate(raw)
    [line] = explain(info.value, "after_dbt", "defs/syncs/after_dbt/defs.yaml")
    assert "after_dbt" in line and "run_after" in line
    assert "dbt_cloud_job" in line and "fivetran_connector" in line  # the fix names both


# -- Fivetran: the same path, from a connector's sync.

FIVETRAN_SYNC = SYNC.replace("after_dbt", "after_fivetran").replace(
    "{dbt_cloud_job: 42}", "{fivetran_connector: warn_enormous}"
)


def fivetran_upstreams(fake: FakeFivetran) -> Upstreams:
    return Upstreams.resolve_from_yaml(
        textwrap.dedent(f"""
        fivetran:
          account_id: acme
          base_url: {fake.url}
        """)
    )


@pytest.fixture
def fivetran(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFivetran]:
    with FakeFivetran() as fake:
        monkeypatch.setenv("FIVETRAN_API_KEY", fake.api_key)
        monkeypatch.setenv("FIVETRAN_API_SECRET", fake.api_secret)
        fake.add_connector("warn_enormous", "salesforce", ["account", "contact"])
        fake.add_connector("crowd_idle", "hubspot", ["deal"], service="hubspot")
        yield fake


class FivetranSensors:
    """dagster-fivetran's polling sensor and the sync's `retl_<sync>_run_after`, evaluated as
    the daemon does: the polling sensor's events go to the instance, each keeps its cursor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.instance, self.repo = instance, defs.get_repository_def()
        self.polling = defs.resolve_sensor_def("fivetran_acme__sync_status_sensor")
        self.retl = defs.resolve_sensor_def("retl_after_fivetran_run_after")
        self.cursors: dict[str, str | None] = {"poll": None, "retl": None}

    def poll(self) -> int:
        """One tick of the polling sensor; how many materialisations it recorded."""
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors["poll"], repository_def=self.repo
        )
        result = self.polling(context)
        assert isinstance(result, dg.SensorResult)
        self.cursors["poll"] = context.cursor
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        return len(result.asset_events)

    def tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors["retl"]
        ) as context:
            result = self.retl(context)
        assert isinstance(result, dg.SensorResult)
        self.cursors["retl"] = result.cursor
        return result


def test_a_fivetran_connector_sync_starts_the_sync(
    fivetran: FakeFivetran,
    receiver: WebhookReceiver,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    make_customers(warehouse_path, 4)
    component = fivetran_upstreams(fivetran)
    defs = dg.Definitions.merge(
        defs_from_yaml(WEBHOOK_DESTINATION, FIVETRAN_SYNC),
        component.build_defs(ComponentTree.for_test().load_context),
    )
    # The connectors' tables are assets, keyed [schema, table] by dagster-fivetran's translator.
    account, contact = (
        dg.AssetKey(["salesforce", "account"]),
        dg.AssetKey(["salesforce", "contact"]),
    )
    deal = dg.AssetKey(["hubspot", "deal"])
    for key in (account, contact, deal):
        assert defs.resolve_assets_def(key)
    sensors = FivetranSensors(defs, instance)
    poll, tick = sensors.poll, sensors.tick

    # The first poll records each connector's last sync (from before Dagster watched it): the
    # sync's baseline tick comes after it, so that is not a new sync.
    assert poll() == 3
    assert "baseline" in str(tick().skip_reason)
    assert poll() == 0 and not tick().run_requests  # nothing finished: nothing recorded
    fivetran.finish_sync("crowd_idle")  # another connector: not this sync's
    assert poll() == 1
    assert instance.fetch_materializations(deal, limit=5).records
    assert not tick().run_requests
    fivetran.finish_sync("warn_enormous", failed=True)  # a failed sync records nothing
    assert poll() == 0 and not tick().run_requests
    finished = fivetran.finish_sync("warn_enormous")
    assert poll() == 2
    [mat] = instance.fetch_materializations(account, limit=1, ascending=False).records
    completed_at = mat.asset_materialization.metadata["dagster-fivetran/sync_completed_at"]  # type: ignore[union-attr]
    assert completed_at.value == dt.datetime.fromisoformat(finished).timestamp()
    result = tick()
    [request] = result.run_requests  # two tables, one connector sync: one sync run
    assert request.run_key == f"fivetran:warn_enormous:{completed_at.value}"
    assert request.tags["retl/trigger"] == f"run_after:{request.run_key}"
    assert poll() == 0 and not tick().run_requests
    [add] = result.dynamic_partitions_requests
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    outcome = defs.resolve_job_def("sync_after_fivetran").execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert outcome.success and len(receiver.delivered()) == 4
    assert fivetran.count("/v1/", 401) == 0


def test_a_fivetran_sync_from_before_the_baseline_is_not_new(
    fivetran: FakeFivetran, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    """The daemon may tick retl's sensor (its baseline) before dagster-fivetran's first poll,
    which records each connector's last sync however old: that sync does not start the sync;
    the next one does."""
    defs = dg.Definitions.merge(
        defs_from_yaml(WEBHOOK_DESTINATION, FIVETRAN_SYNC),
        fivetran_upstreams(fivetran).build_defs(ComponentTree.for_test().load_context),
    )
    sensors = FivetranSensors(defs, instance)
    poll, tick = sensors.poll, sensors.tick

    assert "baseline" in str(tick().skip_reason)
    assert poll() == 3  # the connectors' historical syncs, from 2024
    assert not tick().run_requests
    fivetran.finish_sync("warn_enormous")
    assert poll() == 2
    [request] = tick().run_requests
    assert request.run_key.startswith("fivetran:warn_enormous:")


def test_fivetran_refuses_a_wrong_api_key(
    fivetran: FakeFivetran, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIVETRAN_API_KEY", "ft_wrong")
    with pytest.raises(
        UpstreamConfigError,
        match=r"fivetran: cannot list the connectors of account acme at http://127\.0\.0\.1.*"
        r"401.*Fix: check the API key in FIVETRAN_API_KEY and its secret in FIVETRAN_API_SECRET",
    ):
        fivetran_upstreams(fivetran).build_defs(ComponentTree.for_test().load_context)
    assert fivetran.count("/v1/groups", 401) >= 1


def test_a_missing_fivetran_key_names_the_variable(
    fivetran: FakeFivetran, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIVETRAN_API_KEY")
    with pytest.raises(UpstreamConfigError, match="fivetran.api_key_env: .*FIVETRAN_API_KEY"):
        fivetran_upstreams(fivetran).fivetran_workspace()
    assert not fivetran.log  # refused before asking Fivetran


def test_fivetran_secrets_stay_out_of_the_resource_config(fivetran: FakeFivetran) -> None:
    component = fivetran_upstreams(fivetran)
    workspace = component.fivetran_workspace()
    defs = component.build_defs(ComponentTree.for_test().load_context)
    # The key and secret are read from the environment: the resource's config (what the UI and
    # run config show) holds only the variables' names.
    shown = (
        repr(defs.resources[FIVETRAN_RESOURCE])
        + repr(workspace)
        + repr(workspace.model_dump() if workspace else None)
    )
    assert fivetran.api_key not in shown and fivetran.api_secret not in shown
    assert "FIVETRAN_API_KEY" in shown and "FIVETRAN_API_SECRET" in shown


def test_the_fake_answers_as_fivetran_does(fivetran: FakeFivetran) -> None:
    """An unknown connector is Fivetran's 404; a list pages with `cursor` / `next_cursor`."""
    auth = (fivetran.api_key, fivetran.api_secret)
    response = requests.get(f"{fivetran.url}/v1/connectors/no_such_thing", auth=auth, timeout=5)
    assert response.status_code == 404 and response.json()["code"] == "NotFound_Connector"
    url = f"{fivetran.url}/v1/groups/projected_sickle/connectors"
    first = requests.get(url, params={"limit": 1}, auth=auth, timeout=5).json()["data"]
    second = requests.get(
        url, params={"limit": 1, "cursor": first["next_cursor"]}, auth=auth, timeout=5
    ).json()["data"]
    assert [c["id"] for c in first["items"] + second["items"]] == ["warn_enormous", "crowd_idle"]
    assert "next_cursor" not in second
    response = requests.get(url, auth=("ft_key_test", "wrong"), timeout=5)
    assert response.status_code == 401 and response.json()["code"] == "AuthFailed"
