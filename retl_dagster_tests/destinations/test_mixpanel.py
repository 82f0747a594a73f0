"""Mixpanel: profiles and events through Dagster against a fake Mixpanel API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.mixpanel import FakeMixpanel
from retl_dagster_tests.harness import defs_from_yaml, sql


@pytest.fixture
def mixpanel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMixpanel]:
    monkeypatch.setenv("MP_TOKEN", "tok")
    monkeypatch.setenv("MP_SECRET", "sa-secret")
    fake = FakeMixpanel("tok", "sa.user", "sa-secret")
    with fake:
        monkeypatch.setenv("MP_URL", fake.url)
        yield fake


DEST = """
destinations:
  mixpanel:
    type: mixpanel
    project_token: "{{ env.MP_TOKEN }}"
    service_account_username: sa.user
    service_account_secret: "{{ env.MP_SECRET }}"
    project_id: "123"
    base_url: "{{ env.MP_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
"""


def sync(mode: str, object_: str, delete: str = "nothing") -> str:
    return f"""
name: mp
model: {{table: users}}
primary_key: id
destination: mixpanel
object: {object_}
mode: {mode}
match: {{column: person, field: distinct_id}}
mappings:
  - {{from: email, to: $email}}
  - {{from: plan, to: plan}}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'user-' || i as person,
        'u' || i || '@example.com' as email, 'pro' as plan from range(1, {n + 1}) t(i)""",
    )


def test_profiles_set_unset_and_delete(
    mixpanel: FakeMixpanel, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 50)
    defs = defs_from_yaml(DEST, sync("mirror", "profiles", "delete"))
    assert run_sync(defs, "mp", instance).status == "succeeded"
    assert mixpanel.profiles["user-3"] == {"$email": "u3@example.com", "plan": "pro"}
    sql(warehouse_path, "update users set plan = null where id = 3")
    sql(warehouse_path, "delete from users where id > 45")
    second = run_sync(defs, "mp", instance)
    assert (second.summary["changed"], second.summary["removed"]) == (1, 5)
    assert mixpanel.profiles["user-3"] == {"$email": "u3@example.com"}  # null -> $unset
    assert len(mixpanel.profiles) == 45


def test_a_bad_profile_is_isolated(
    mixpanel: FakeMixpanel, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 20)
    sql(warehouse_path, "update users set person = 'null' where id = 11")
    out = run_sync(defs_from_yaml(DEST, sync("upsert", "profiles")), "mp", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (19, 1)
    [(error,)] = sql(
        warehouse_path, "select error from _retl.sync_record_results where status = 'rejected'"
    )
    assert error == "$distinct_id is invalid: 'null'"


def test_events_import_with_failed_records_and_dedupe(
    mixpanel: FakeMixpanel, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    mixpanel.rate_limit, mixpanel.window_s = 2, 0.5
    users(warehouse_path, 300)
    sql(warehouse_path, "update users set person = 'anonymous' where id = 7")
    defs = defs_from_yaml(
        DEST.replace("backoff_max_s: 1", "backoff_max_s: 1\n    batch_size: 25"),
        sync("events", "Plan Seen"),
    )
    out = run_sync(defs, "mp", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (299, 1)
    assert len(mixpanel.events) == 299
    assert mixpanel.count("/import", 429) > 0  # rate limited, survived, nothing doubled
    [(error,)] = sql(
        warehouse_path, "select error from _retl.sync_record_results where status = 'rejected'"
    )
    assert error.startswith("properties.distinct_id: ")
    assert next(iter(mixpanel.events.values()))["event"] == "Plan Seen"


def test_profile_updates_never_geolocate_at_our_server(
    mixpanel: FakeMixpanel, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 5)
    sql(warehouse_path, "update users set plan = null where id = 2")  # a $set and an $unset
    out = run_sync(defs_from_yaml(DEST, sync("upsert", "profiles")), "mp", instance)
    assert out.status == "succeeded"
    assert len(mixpanel.updates) == 6
    assert all(u["$ip"] == 0 and u["$ignore_time"] is True for u in mixpanel.updates)


def test_a_mapped_event_time_is_the_events_time(
    mixpanel: FakeMixpanel, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    sql(
        warehouse_path,
        "alter table users add column seen_at timestamp; "
        "update users set seen_at = timestamp '2026-01-15 10:00:00' + to_minutes(id::bigint); "
        "update users set seen_at = null where id = 3",
    )
    yaml = sync("events", "Plan Seen").replace(
        "  - {from: plan, to: plan}\n",
        "  - {from: plan, to: plan}\n  - {from: seen_at, to: time}\n",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "mp", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (2, 1)
    times = {
        e["properties"]["distinct_id"]: e["properties"]["time"] for e in mixpanel.events.values()
    }
    base_ms = 1768471200000  # 2026-01-15T10:00:00Z in ms: a Unix integer, not ISO text
    assert times == {"user-1": base_ms + 60_000, "user-2": base_ms + 120_000}
    [(error,)] = sql(
        warehouse_path, "select error from _retl.sync_record_results where status = 'rejected'"
    )
    assert error.startswith("time: event time None is empty")


def test_an_event_time_built_as_an_object_is_refused_before_anything_is_sent() -> None:
    from retl_dagster.destinations.base import SyncShape
    from retl_dagster.destinations.impl.mixpanel import MixpanelDestination

    shape = SyncShape(
        "events", "Signed Up", "nothing", None, ["plan", "time"], ("column", "object_build")
    )
    [(field, problem, fix)] = MixpanelDestination.check_sync(shape)
    assert field == "mappings[2]" and "event's time" in problem and "with `from:`" in fix
    ok = SyncShape("events", "Signed Up", "nothing", None, ["plan", "time"], ("column", "column"))
    assert MixpanelDestination.check_sync(ok) == []
