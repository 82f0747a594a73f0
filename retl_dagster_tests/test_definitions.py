"""The project's code location loads without a warehouse and refuses broken references."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.references import sync_configs
from retl_dagster.components.sync import job_name
from retl_dagster.definitions import defs
from retl_dagster.engine.config import ConfigError
from retl_dagster_tests.harness import defs_from_yaml


def test_definitions_load_with_no_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "warehouse.duckdb"
    monkeypatch.setenv("RETL_WAREHOUSE", str(missing))
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)  # what `dagster definitions validate` checks
    names = [c.name for c in sync_configs(loaded)]
    assert names == ["demo_pro_users", "demo_users_to_file"]
    for n in names:
        assert loaded.resolve_job_def(job_name(n))
    assert not missing.exists()


SYNC = """
name: s
model: {table: t}
primary_key: id
destination: hook
mappings: [{from: a, to: a}]
"""


def test_unknown_destination_is_named_with_the_declared_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        defs_from_yaml("destinations: {other: {type: file, path: x.jsonl}}", SYNC)
    assert str(exc.value).startswith(
        "sync 's', field 'destination': no destination named 'hook' is declared (declared: other)"
    )


def test_a_literal_secret_in_yaml_is_refused() -> None:
    # Raised while Dagster resolves the YAML, which wraps it with the file position.
    with pytest.raises(Exception, match="destination 'hook', field 'secret': a secret is written"):
        defs_from_yaml(
            "destinations: {hook: {type: webhook, url: 'http://x', secret: hunter2}}", SYNC
        )


def test_unknown_destination_type() -> None:
    with pytest.raises(
        Exception, match="destination 'hook', field 'type': unknown type 'hubspott'"
    ):
        defs_from_yaml("destinations: {hook: {type: hubspott}}", SYNC)


def test_env_references_stay_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "value-not-in-definitions")
    loaded = defs_from_yaml(
        "destinations: {hook: {type: webhook, url: 'http://x', secret: '{{ env.HOOK_SECRET }}'}}",
        SYNC,
    )
    res = loaded.resources["destination__hook"]  # type: ignore[index]
    assert res.env == {"secret": "HOOK_SECRET"}
    assert "value-not-in-definitions" not in repr(res)
    assert res.options()["secret"] == "value-not-in-definitions"


def test_the_instance_retl_writes_limits_runs_per_sync_and_warehouse_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retl_dagster.cli import ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    config = instance.get_concurrency_config()
    assert config.run_queue_config.tag_concurrency_limits == [
        {"key": "retl/sync", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert config.pool_config.default_pool_limit == 1


def test_editors_and_dg_see_a_syncs_real_schema() -> None:
    from retl_dagster.components import Sync

    schema = Sync.get_model_cls().model_json_schema(by_alias=True)  # type: ignore[union-attr]
    assert {"name", "model", "primary_key", "mappings", "schedule"} <= set(schema["properties"])
    assert (
        "FieldMapping" in schema["$defs"]
        and "from" in schema["$defs"]["FieldMapping"]["properties"]
    )
