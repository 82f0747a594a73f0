"""The dbt Cloud and Fivetran accounts whose job runs and connector syncs start retl syncs
(`run_after:` on a sync), through Dagster's own integrations: dagster-dbt's dbt Cloud workspace
and dagster-fivetran's workspace give their assets, and their polling sensors record those
assets' materialisations when a job run or a connector sync finishes."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_dbt.cloud_v2.client import DbtCloudWorkspaceClient
from dagster_dbt.cloud_v2.resources import (
    DbtCloudCredentials,
    DbtCloudWorkspace,
    load_dbt_cloud_asset_specs,
)
from dagster_dbt.cloud_v2.sensor_builder import build_dbt_cloud_polling_sensor
from dagster_fivetran import (
    FivetranWorkspace,
    build_fivetran_polling_sensor,
    load_fivetran_asset_specs,
)
from dagster_fivetran.resources import FivetranClient

from retl_dagster.components.dbt_keys import project_translator
from retl_dagster.components.triggers import DBT_CLOUD_RESOURCE

FIVETRAN_RESOURCE = "retl_fivetran"


class UpstreamConfigError(ValueError):
    """A dbt Cloud or Fivetran declaration is wrong; the message names the field and the fix."""


def _secret(where: str, field: str, var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise UpstreamConfigError(
            f"Upstreams, {where}.{field}: environment variable {var} is not set. Fix: export "
            f"{var}=<the secret> (or name another variable in {field})"
        )
    return value


class DbtCloudAccount(dg.Model):
    """A dbt Cloud account's project and (deployment) environment, as in a job's URL."""

    account_id: int
    project_id: int
    environment_id: int
    token_env: str = "DBT_CLOUD_TOKEN"
    """Environment variable holding a service token (Job Admin, or Job Viewer + Job Runner)."""
    access_url: str = "https://cloud.getdbt.com"
    """Your region's / cell's access URL (Account settings), e.g. https://ab123.us1.dbt.com."""


class FivetranAccount(dg.Model):
    account_id: str
    api_key_env: str = "FIVETRAN_API_KEY"
    api_secret_env: str = "FIVETRAN_API_SECRET"
    base_url: str = "https://api.fivetran.com"


class _FivetranClient(FivetranClient):
    def __init__(self, *, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1"


class EnvTokenDbtCloudWorkspace(DbtCloudWorkspace):
    """dagster-dbt's workspace with the service token read from the environment when a client
    is made: `credentials.token` holds only the variable's name, so the token never shows in
    the resource's config (the UI, run config)."""

    token_env: str = "DBT_CLOUD_TOKEN"

    def get_client(self) -> DbtCloudWorkspaceClient:
        return DbtCloudWorkspaceClient(
            account_id=self.credentials.account_id,
            token=_secret("dbt_cloud", "token_env", self.token_env),
            access_url=self.credentials.access_url,
            request_max_retries=self.request_max_retries,
            request_retry_delay=self.request_retry_delay,
            request_timeout=self.request_timeout,
        )


def _env_value(value: str, field: str) -> str:
    """A field given as `dg.EnvVar`, read from the environment: only an initialised resource has
    its EnvVars resolved, and `build_fivetran_polling_sensor` calls `get_client()` on the
    workspace as built, which would otherwise send the variable's *name* as the key (401)."""
    if isinstance(value, dg.EnvVar):
        return _secret("fivetran", field, value.env_var_name)
    return value


class BaseUrlFivetranWorkspace(FivetranWorkspace):
    """dagster-fivetran's workspace at a base URL of one's choice (a proxy, a test fake), with
    its key and secret read from the environment when a client is made."""

    base_url: str = "https://api.fivetran.com"

    def get_client(self) -> FivetranClient:
        return _FivetranClient(
            api_key=_env_value(self.api_key, "api_key_env"),
            api_secret=_env_value(self.api_secret, "api_secret_env"),
            request_max_retries=self.request_max_retries,
            request_retry_delay=self.request_retry_delay,
            request_backoff_factor=self.request_backoff_factor,
            disable_schedule_on_trigger=self.disable_schedule_on_trigger,
            retry_on_reschedule=self.retry_on_reschedule,
            base_url=self.base_url,
        )


class Upstreams(dg.Component, dg.Resolvable, dg.Model):
    """`dbt_cloud: {account_id, project_id, environment_id, token_env, access_url}` and
    `fivetran: {account_id, api_key_env, api_secret_env, base_url}`; both optional."""

    dbt_cloud: DbtCloudAccount | None = None
    fivetran: FivetranAccount | None = None

    def dbt_cloud_workspace(self) -> DbtCloudWorkspace | None:
        a = self.dbt_cloud
        if a is None:
            return None
        _secret("dbt_cloud", "token_env", a.token_env)  # refused at load when unset
        return EnvTokenDbtCloudWorkspace(
            credentials=DbtCloudCredentials(
                account_id=a.account_id, token=f"env:{a.token_env}", access_url=a.access_url
            ),
            project_id=a.project_id,
            environment_id=a.environment_id,
            token_env=a.token_env,
        )

    def fivetran_workspace(self) -> FivetranWorkspace | None:
        a = self.fivetran
        if a is None:
            return None
        _secret("fivetran", "api_key_env", a.api_key_env)  # refused at load when unset
        _secret("fivetran", "api_secret_env", a.api_secret_env)
        return BaseUrlFivetranWorkspace(
            account_id=a.account_id,
            # Read when the resource is initialised; the UI shows the variables' names.
            api_key=dg.EnvVar(a.api_key_env),
            api_secret=dg.EnvVar(a.api_secret_env),
            base_url=a.base_url,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets: list[dg.AssetSpec] = []
        sensors: list[dg.SensorDefinition] = []
        resources: dict[str, object] = {}
        dbt_cloud = self.dbt_cloud_workspace()
        if dbt_cloud is not None:
            translator = project_translator()
            try:
                assets += load_dbt_cloud_asset_specs(dbt_cloud, dagster_dbt_translator=translator)
            except dg.Failure as exc:  # dagster-dbt retried and gave up: say what to check
                a = self.dbt_cloud
                assert a is not None
                raise UpstreamConfigError(
                    f"Upstreams, dbt_cloud: cannot read project {a.project_id} (environment "
                    f"{a.environment_id}) of account {a.account_id} at {a.access_url}: "
                    f"{exc.description}. Fix: check the service token in {a.token_env} (it "
                    "needs Job Admin), account_id, project_id, environment_id and access_url"
                ) from exc
            sensors.append(
                build_dbt_cloud_polling_sensor(
                    workspace=dbt_cloud, dagster_dbt_translator=translator
                )
            )
            resources[DBT_CLOUD_RESOURCE] = dbt_cloud
        fivetran = self.fivetran_workspace()
        if fivetran is not None:
            try:
                assets += load_fivetran_asset_specs(fivetran)
            except dg.Failure as exc:  # dagster-fivetran retried and gave up: say what to check
                f = self.fivetran
                assert f is not None
                raise UpstreamConfigError(
                    f"Upstreams, fivetran: cannot list the connectors of account {f.account_id} "
                    f"at {f.base_url}: {exc.description}. Fix: check the API key in "
                    f"{f.api_key_env} and its secret in {f.api_secret_env} (a key with read "
                    "access to the groups, destinations and connections), and base_url"
                ) from exc
            sensors.append(build_fivetran_polling_sensor(workspace=fivetran))
            resources[FIVETRAN_RESOURCE] = fivetran
        return dg.Definitions(assets=assets, sensors=sensors, resources=resources)
