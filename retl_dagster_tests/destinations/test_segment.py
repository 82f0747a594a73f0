"""Segment: identify and track calls from rows, through Dagster, against a fake Tracking API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.segment import FakeSegment
from retl_dagster_tests.harness import defs_from_yaml, sql

KEY = "wk_fake"


@pytest.fixture
def segment(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSegment]:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    fake = FakeSegment(KEY)
    with fake:
        monkeypatch.setenv("SEGMENT_URL", fake.url)
        yield fake


DEST = """
destinations:
  segment:
    type: segment
    write_key: "{{ env.SEGMENT_WRITE_KEY }}"
    base_url: "{{ env.SEGMENT_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
"""


def sync(mode: str, object_: str) -> str:
    return f"""
name: to_segment
model: {{table: users}}
primary_key: id
destination: segment
object: {object_}
mode: {mode}
match: {{column: user_ref, field: userId}}
mappings:
  - {{from: email, to: email}}
  - {{from: plan, to: plan}}
  - {{from: blob, to: notes}}
"""


def users(path: Path, n: int, blob_size: int = 10) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'u-' || i as user_ref,
        'u' || i || '@example.com' as email, 'pro' as plan, repeat('x', {blob_size}) as blob
        from range(1, {n + 1}) t(i)""",
    )


def test_identify_calls_then_only_changes(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 300, blob_size=3000)  # ~1 MB of calls: must split under 500 KB
    defs = defs_from_yaml(DEST, sync("upsert", "identify"))
    first = run_sync(defs, "to_segment", instance)
    assert first.status == "succeeded", first.summary
    identifies = segment.of_type("identify")
    assert len(identifies) == 300
    assert all(e.status == 200 for e in segment.log)
    assert segment.count("/v1/batch") >= 3
    # Under the official SDK's 475,000-byte batch cut, not just Segment's 500 KB.
    assert max(len(body) for _, body in segment.received) <= 475_000
    call = next(c for c in identifies if c["userId"] == "u-5")
    assert call["traits"]["email"] == "u5@example.com"

    sql(warehouse_path, "update users set plan = 'free' where id <= 4")
    second = run_sync(defs, "to_segment", instance)
    assert second.summary["changed"] == 4 and len(segment.of_type("identify")) == 304


def test_a_call_over_32kb_is_rejected_the_rest_delivered(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 10)
    sql(warehouse_path, "update users set blob = repeat('y', 40000) where id = 3")
    outcome = run_sync(defs_from_yaml(DEST, sync("events", "Plan Checked")), "to_segment", instance)
    assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (9, 1)
    [(error,)] = sql(
        warehouse_path, "select error from _retl.sync_record_results where status = 'rejected'"
    )
    assert "Segment accepts at most 32 KB a call" in error
    tracks = segment.of_type("track")
    assert len(tracks) == 9 and tracks[0]["event"] == "Plan Checked"


def test_rate_limit_survived_and_message_ids_stable(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    segment.rate_limit, segment.window_s = 2, 0.5
    users(warehouse_path, 200)
    defs = defs_from_yaml(
        DEST.replace("backoff_max_s: 1", "backoff_max_s: 1\n    batch_size: 10"),
        sync("events", "Seen"),
    )
    outcome = run_sync(defs, "to_segment", instance)
    assert outcome.status == "succeeded"
    assert segment.count("/v1/batch", 429) > 0
    assert len(segment.of_type("track")) == 200 and segment.duplicates == 0


def test_segment_cannot_delete() -> None:
    with pytest.raises(Exception, match="field 'delete_behavior'"):
        defs_from_yaml(DEST, sync("upsert", "identify") + "delete_behavior: delete\n")


def test_a_mapped_timestamp_is_the_calls_timestamp(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    sql(
        warehouse_path,
        "alter table users add column checked_at timestamp; "
        "update users set checked_at = timestamp '2026-01-15 10:00:00' + to_seconds(id::bigint)",
    )
    yaml = sync("events", "Plan Checked").replace(
        "  - {from: blob, to: notes}", "  - {from: checked_at, to: timestamp}"
    )
    assert run_sync(defs_from_yaml(DEST, yaml), "to_segment", instance).status == "succeeded"
    by_user = {c["userId"]: c for c in segment.of_type("track")}
    assert by_user["u-2"]["timestamp"] == "2026-01-15T10:00:02.000+00:00"
    assert by_user["u-2"]["properties"] == {"email": "u2@example.com", "plan": "pro"}


def test_an_unmapped_timestamp_is_the_runs_start(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync("upsert", "identify")), "to_segment", instance)
    start = dt.datetime.strptime(out.summary["run_id"][:16], "%Y%m%dT%H%M%SZ")
    stamps = {c["timestamp"] for c in segment.of_type("identify")}
    assert stamps == {start.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")}


def test_batches_in_flight_at_once_deliver_every_call_once(
    segment: FakeSegment, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    # concurrency 4: four batches of 25 in flight, sharing the destination's one budget.
    users(warehouse_path, 300)
    dest = DEST + "    concurrency: 4\n    batch_size: 25\n"
    out = run_sync(defs_from_yaml(dest, sync("upsert", "identify")), "to_segment", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 300
    identifies = [c for c in segment.calls.values() if c["type"] == "identify"]
    assert sorted(c["userId"] for c in identifies) == sorted(f"u-{i}" for i in range(1, 301))
    assert len(segment.received) == 12  # 300 / 25 requests, none resent


def test_concurrency_is_taken_up_to_its_limit() -> None:
    from retl_dagster.destinations import DestinationConfigError, build_destination

    for type_, options in [
        ("segment", {"write_key": "k"}),
        ("braze", {"api_key": "k", "base_url": "http://127.0.0.1:9"}),
        ("mixpanel", {"project_token": "t"}),
    ]:
        assert build_destination("d", type_, {**options, "concurrency": 8}).concurrency == 8
        with pytest.raises(DestinationConfigError, match="concurrency"):
            build_destination("d", type_, {**options, "concurrency": 9})
