"""A run's stages without Dagster: diff, load, replay and a key failure, each recording its own
status in `_retl.sync_runs`, on both warehouses."""

from __future__ import annotations

import json
from pathlib import Path

from retl_dagster.destinations import Destination, build_destination
from retl_dagster.engine import stages
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.runs import get_run, new_run_id
from retl_dagster.engine.warehouse import Warehouse
from retl_dagster_tests.harness import ALL_WAREHOUSES, sql

WAREHOUSES = ALL_WAREHOUSES

CONFIG = SyncConfig.model_validate(
    {
        "name": "people_file",
        "model": {"table": "people"},
        "primary_key": "id",
        "destination": "out",
        "mappings": [{"from": "email", "to": "email"}],
        "delete_behavior": "delete",
    }
)


def test_the_engine_runs_a_sync_without_dagster(warehouse_path: Path, tmp_path: Path) -> None:
    sql(
        warehouse_path,
        "create table people as select i as id, 'p' || i || '@example.com' as email "
        "from generate_series(1, 25) as t(i)",
    )
    out = tmp_path / "out.jsonl"

    def open_destination() -> Destination:
        return build_destination("out", "file", {"path": str(out)})

    first = new_run_id()
    with Warehouse() as wh:
        diffed = stages.diff_run(wh, CONFIG, first)
        assert diffed.ok and diffed.counts is not None
        assert (diffed.counts.rows_queried, diffed.counts.added) == (25, 25)
        assert get_run(wh, "people_file", first)["status"] == "queued"  # type: ignore[index]
        loaded = stages.load_run(wh, CONFIG, open_destination, first)
    assert loaded.status == "succeeded" and loaded.run["succeeded"] == 25
    assert len(out.read_text().splitlines()) == 25

    # Nothing changed: the next diff finds nothing; a replay resends the first run's records.
    second, replay = new_run_id(), new_run_id()
    with Warehouse() as wh:
        assert stages.diff_run(wh, CONFIG, second).counts.total == 0  # type: ignore[union-attr]
        again = stages.diff_run(wh, CONFIG, replay, replay_of=first)
        assert again.replay_of == first and again.counts.added == 25  # type: ignore[union-attr]
        stages.load_run(wh, CONFIG, open_destination, replay, replay=True, salt="r")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 50 and records[25]["id"] == records[0]["id"]

    # A duplicated key stops the run at the diff, recorded as failed with the reason.
    sql(warehouse_path, "insert into people values (1, 'dup@example.com')")
    bad = new_run_id()
    with Warehouse() as wh:
        stopped = stages.diff_run(wh, CONFIG, bad)
        row = get_run(wh, "people_file", bad)
    assert not stopped.ok and stopped.keys is not None and stopped.keys.duplicate_keys == 1
    assert row is not None and row["status"] == "failed" and "repeat" in row["error"]
