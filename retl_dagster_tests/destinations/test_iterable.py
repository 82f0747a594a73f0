"""Iterable: users (bulk update), events (bulk track) and list subscriptions through Dagster
against a fake Iterable API that holds the rules of Iterable's own clients (fakes/iterable.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import Batch, DestinationError, Record
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.iterable import FakeIterable
from retl_dagster_tests.harness import defs_from_yaml, rejected_records, sql

KEY = "itbl_server_key_0123456789"


@pytest.fixture
def itbl(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIterable]:
    monkeypatch.setenv("ITBL_KEY", KEY)
    fake = FakeIterable(KEY)
    with fake:
        monkeypatch.setenv("ITBL_URL", fake.url)
        yield fake


DEST = """
destinations:
  itbl:
    type: iterable
    api_key: "{{ env.ITBL_KEY }}"
    base_url: "{{ env.ITBL_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
"""


def sync(
    mode: str = "upsert",
    object_: str = "users",
    delete: str = "nothing",
    extra: str = "",
    match: str = "{column: email, field: email}",
) -> str:
    return f"""
name: to_itbl
model: {{table: users}}
primary_key: id
destination: itbl
object: "{object_}"
mode: {mode}
match: {match}
mappings:
  - {{from: plan, to: plan}}
  - {{from: seats, to: seats}}
{extra}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'ext-' || i as ext,
        'u' || i || '@example.com' as email, 'pro' as plan, i as seats,
        timestamp '2026-01-15 10:00:00' + to_minutes(i::bigint) as at
        from range(1, {n + 1}) t(i)""",
    )


def test_users_are_upserted_by_email(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    defs = defs_from_yaml(DEST, sync())
    out = run_sync(defs, "to_itbl", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 30
    assert len(itbl.users) == 30 and itbl.count("/api/users/bulkUpdate", 200) == 1
    assert itbl.users["email:u7@example.com"] == {
        "email": "u7@example.com",
        "dataFields": {"plan": "pro", "seats": 7},
    }
    sql(warehouse_path, "update users set plan = 'free' where id = 7")
    out = run_sync(defs, "to_itbl", instance)
    assert out.summary["changed"] == 1 and len(itbl.users) == 30  # an upsert, no duplicate
    assert itbl.users["email:u7@example.com"]["dataFields"]["plan"] == "free"


def test_a_bad_email_is_rejected_with_iterables_reason_and_the_rest_arrive(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 20)
    sql(warehouse_path, "update users set email = 'nope' where id = 4")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_itbl", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (19, 1)
    assert rejected_records(warehouse_path) == [
        ("4", "Iterable: the email is not a valid address (invalidEmails)")
    ]
    assert len(itbl.users) == 19 and "email:nope" not in itbl.users
    assert itbl.count("/api/users/bulkUpdate") == 1  # the answer named the row: nothing resent


def test_a_request_refused_whole_is_halved_until_the_bad_row_is_alone(
    itbl: FakeIterable,
) -> None:
    itbl.field_types["plan"] = "str"  # the project's field; row 6 sends a number
    records = [
        Record("added", str(i), {"plan": 6 if i == 6 else "pro"}, f"u{i}@example.com")
        for i in range(1, 9)
    ]
    batch = Batch("s", "run1", "upsert", "users", records, match_field="email")
    with build_destination("i", "iterable", {"api_key": KEY, "base_url": itbl.url}) as dest:
        result = dest.deliver(batch)
    assert list(result.rejected) == ["6"]
    assert result.rejected["6"] == (
        "Iterable: Field type mismatch for plan: expected str, got int (BadParams)"
    )
    assert len(itbl.users) == 7 and "email:u6@example.com" not in itbl.users


def test_events_carry_createdat_and_a_stable_id(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 2500)
    yaml = sync(
        "events",
        "plan_checked",
        extra="  - {from: at, to: createdAt}",
        match="{column: ext, field: userId}",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_itbl", instance)
    assert out.status == "succeeded" and len(itbl.events) == 2500
    assert itbl.count("/api/events/trackBulk", 200) == 3  # 1,000 events a request
    [ev] = [e for e in itbl.events.values() if e["userId"] == "ext-2"]
    assert ev["eventName"] == "plan_checked" and ev["createdAt"] == 1768471320  # 10:02Z
    assert ev["dataFields"] == {"plan": "pro", "seats": 2}
    assert itbl.updated_events == 0


def test_a_list_is_subscribed_then_removed_rows_unsubscribed(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 10)
    defs = defs_from_yaml(DEST, sync(object_="list:42", delete="delete"))
    out = run_sync(defs, "to_itbl", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 10
    assert len(itbl.lists[42]) == 10 and itbl.lists[43] == set()
    assert itbl.users["email:u3@example.com"]["dataFields"] == {"plan": "pro", "seats": 3}
    sql(warehouse_path, "delete from users where id > 7")
    out = run_sync(defs, "to_itbl", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 3
    assert itbl.lists[42] == {f"email:u{i}@example.com" for i in range(1, 8)}
    assert len(itbl.users) == 10  # unsubscribed from the list, never deleted


def test_rate_limits_are_survived_with_nothing_lost_or_doubled(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    itbl.rate_limit, itbl.window_s = 2, 1.0
    users(warehouse_path, 200)
    dest = DEST.replace("backoff_max_s: 1", "backoff_max_s: 1\n    batch_size: 20")
    out = run_sync(defs_from_yaml(dest, sync("events", "viewed")), "to_itbl", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 200
    assert itbl.count("/api/events/trackBulk", 429) > 0
    assert len(itbl.events) == 200 and itbl.updated_events == 0


def test_a_resend_after_a_lost_answer_updates_the_same_events(
    itbl: FakeIterable, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    itbl.lost_answers = 1  # applied, then answered 502: the client sends it again
    users(warehouse_path, 50)
    out = run_sync(defs_from_yaml(DEST, sync("events", "viewed")), "to_itbl", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 50
    assert itbl.count("/api/events/trackBulk", 502) == 1
    assert len(itbl.events) == 50 and itbl.updated_events == 50  # the same ids: no doubles


def test_a_batch_sent_again_after_a_crash_updates_the_same_events(itbl: FakeIterable) -> None:
    records = [Record("added", str(i), {"plan": "pro"}, f"u{i}@example.com") for i in range(5)]
    batch = Batch("s", "run1", "events", "viewed", records, match_field="email")
    with build_destination("i", "iterable", {"api_key": KEY, "base_url": itbl.url}) as dest:
        dest.deliver(batch)
        dest.deliver(batch)  # a run that died before recording the first answer
    assert len(itbl.events) == 5 and itbl.updated_events == 5


def test_a_wrong_key_fails_the_run_saying_so(
    itbl: FakeIterable,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITBL_KEY", "wrong_secret_key")
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_itbl", instance)
    assert out.status == "failed"
    error = out.summary["error"]
    assert "Iterable refused the API key" in error and "BadApiKey" in error and "Fix:" in error
    assert "wrong_secret_key" not in error and itbl.users == {}


def test_check_lists_the_lists_and_names_a_missing_one(itbl: FakeIterable) -> None:
    config = {"api_key": KEY, "base_url": itbl.url}
    with build_destination("i", "iterable", config) as dest:
        assert dest.check() == "Iterable accepts the API key (the project has 2 list(s))"
        assert dest.check("list:42").startswith("Iterable accepts")
        with pytest.raises(DestinationError, match="the project has no list 99"):
            dest.check("list:99")
    assert all(e.method == "GET" for e in itbl.log)  # nothing written
    with (
        build_destination("i", "iterable", {**config, "api_key": "nope_key"}) as dest,
        pytest.raises(DestinationError, match="refused the API key") as info,
    ):
        dest.check()
    assert "nope_key" not in str(info.value)


def test_the_fake_refuses_what_iterable_refuses(itbl: FakeIterable) -> None:
    url = f"{itbl.url}/api/users/bulkUpdate"
    headers = {"Api-Key": KEY}
    bad = httpx.post(url, json={"users": []}, headers={"Api-Key": "x"})
    assert bad.status_code == 401 and bad.json()["code"] == "BadApiKey"
    many = [{"email": f"u{i}@example.com"} for i in range(1001)]
    assert httpx.post(url, json={"users": many}, headers=headers).status_code == 400
    mixed = [{"email": "ok@example.com", "dataFields": {}}, {"email": "bad"}]
    answer = httpx.post(url, json={"users": mixed}, headers=headers).json()
    assert answer["failCount"] == 1 and answer["failedUpdates"] == {"invalidEmails": ["bad"]}
    unknown = [{"email": "ok@example.com", "name": "x"}]
    assert httpx.post(url, json={"users": unknown}, headers=headers).status_code == 400
    event = {"email": "ok@example.com", "eventName": "e", "createdAt": "2026-01-01"}
    track = httpx.post(
        f"{itbl.url}/api/events/trackBulk", json={"events": [event]}, headers=headers
    )
    assert track.status_code == 400 and "createdAt" in track.json()["msg"]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(object_="widgets"), "is not 'users' or 'list:<id>'"),
        (sync(object_="list:abc"), "no numeric list id"),
        (sync("events", "users"), "the object is the event's name"),
        (sync(match="{column: ext, field: phone}"), "Iterable identifies users by email or"),
        (sync(delete="delete"), "never deletes Iterable users"),
        (sync("events", "viewed", delete="delete"), "events are insert-only"),
        (sync(delete="clear"), "iterable cannot 'clear'"),
        (sync(mode="insert"), "does not support mode 'insert'"),
    ],
)
def test_declarations_iterable_cannot_take_are_refused_at_validate(yaml: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_api_key_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.ITBL_KEY }}"', "literal_server_key")
    with pytest.raises(Exception, match="api_key") as info:
        defs_from_yaml(literal, sync())
    assert "literal_server_key" not in str(info.value)


def test_region_eu_sends_to_the_eu_host() -> None:
    from retl_dagster.destinations.impl.iterable import IterableConfig

    config = IterableConfig.model_validate({"api_key": KEY, "region": "eu"})
    assert config.api_url == "https://api.eu.iterable.com"
    assert IterableConfig.model_validate({"api_key": KEY}).api_url == "https://api.iterable.com"
