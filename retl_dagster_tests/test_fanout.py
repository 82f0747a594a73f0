"""One model, many syncs: three syncs on one `table:` model load as one model asset fanning out
to three diffs, pass `dagster definitions validate`, and each runs and delivers on its own."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from retl_dagster.components.sync import diff_key, load_key
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import dagster_validate, defs_from_yaml, sql

DESTINATIONS = """
destinations:
  crm: {type: file, path: "{path}/crm.jsonl"}
  ads: {type: file, path: "{path}/ads.jsonl"}
  mail: {type: file, path: "{path}/mail.jsonl"}
"""


def sync_yaml(name: str, destination: str, field: str) -> str:
    return f"""
name: {name}
model: {{table: customers}}
primary_key: id
destination: {destination}
mappings: [{{from: {field}, to: {field}}}]
"""


SYNCS = (
    sync_yaml("customers_crm", "crm", "email"),
    sync_yaml("customers_ads", "ads", "email"),
    sync_yaml("customers_mail", "mail", "plan"),
)
MODEL = dg.AssetKey(["warehouse", "customers"])


def make_defs(out: Path) -> dg.Definitions:
    return defs_from_yaml(DESTINATIONS.replace("{path}", str(out)), *SYNCS)


def test_three_syncs_share_one_model_asset(tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    models = [k for k in graph.get_all_asset_keys() if k.path[0] == "warehouse"]
    assert models == [MODEL]
    downstream = graph.get(MODEL).child_keys
    assert downstream == {diff_key(n) for n in ("customers_crm", "customers_ads", "customers_mail")}


def test_dagster_definitions_validate_accepts_the_fan_out(tmp_path: Path) -> None:
    # The real CLI, as CI runs it on the project, on a code location holding the three syncs.
    done = dagster_validate(
        f"""
        from pathlib import Path
        from retl_dagster_tests.test_fanout import make_defs
        defs = make_defs(Path({str(tmp_path)!r}))
        """,
        tmp_path / "fanout_defs.py",
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conflicting" not in done.stderr


def test_each_sync_on_the_shared_model_runs_and_delivers(
    tmp_path: Path, warehouse_path: Path, instance: dg.DagsterInstance
) -> None:
    sql(
        warehouse_path,
        """create table customers as select i as id, 'u' || i || '@example.com' as email,
           case when i % 2 = 0 then 'pro' else 'free' end as plan
           from generate_series(1, 30) as t(i)""",
    )
    defs = make_defs(tmp_path)
    for name in ("customers_crm", "customers_ads", "customers_mail"):
        outcome = run_sync(defs, name, instance)
        assert outcome.status == "succeeded", outcome.summary
        assert outcome.summary["added"] == 30
        assert instance.get_latest_materialization_event(load_key(name)) is not None
    crm = [json.loads(line) for line in (tmp_path / "crm.jsonl").read_text().splitlines()]
    mail = [json.loads(line) for line in (tmp_path / "mail.jsonl").read_text().splitlines()]
    assert len(crm) == 30 and crm[0]["fields"].keys() == {"email"}
    assert len(mail) == 30 and {r["fields"]["plan"] for r in mail} == {"pro", "free"}
    # Each sync keeps its own state: a change reaches only the syncs that map that column.
    sql(warehouse_path, "update customers set plan = 'pro' where id = 1")
    assert run_sync(defs, "customers_crm", instance).summary["changed"] == 0
    assert run_sync(defs, "customers_mail", instance).summary["changed"] == 1
