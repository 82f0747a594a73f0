"""Klaviyo: profile imports, list membership and events through Dagster against a fake Klaviyo
whose every write body is checked against the `klaviyo-api` SDK's models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import DestinationError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.klaviyo import FakeKlaviyo
from retl_dagster_tests.harness import defs_from_yaml, rejected_records, sql

KEY = "pk_test_0123456789abcdef"


@pytest.fixture
def klaviyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKlaviyo]:
    monkeypatch.setenv("KLAVIYO_KEY", KEY)
    fake = FakeKlaviyo(KEY)
    fake.lists["VIP01"] = set()
    with fake:
        monkeypatch.setenv("KLAVIYO_URL", fake.url)
        yield fake
    # Every body any test sent fits Klaviyo's own request models (contracts/klaviyo.py).
    assert fake.contract_errors == []


DEST = """
destinations:
  klaviyo:
    type: klaviyo
    private_key: "{{ env.KLAVIYO_KEY }}"
    base_url: "{{ env.KLAVIYO_URL }}"
    poll_interval_s: 0.05
    backoff_initial_s: 0.05
    backoff_max_s: 2
"""


def sync(
    mode: str = "upsert",
    object_: str = "profiles",
    delete: str = "nothing",
    extra: str = "",
    match: str = "{column: email, field: email}",
) -> str:
    return f"""
name: to_klaviyo
model: {{table: users}}
primary_key: id
destination: klaviyo
object: "{object_}"
mode: {mode}
match: {match}
mappings:
  - {{from: first, to: first_name}}
  - {{from: plan, to: plan}}
{extra}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'ext-' || i as ext,
        'u' || i || '@example.com' as email, 'User' || i as first, 'pro' as plan,
        timestamp '2026-01-15 10:00:00' + to_minutes(i::bigint) as at,
        (i * 1.5)::decimal(10, 2) as amount from range(1, {n + 1}) t(i)""",
    )


def test_profiles_are_imported_with_custom_properties(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 25)
    klaviyo.job_polls = 2  # queued, processing, then complete: the client waits for it
    out = run_sync(defs_from_yaml(DEST, sync()), "to_klaviyo", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 25
    assert len(klaviyo.profiles) == 25 and klaviyo.count("/api/profile-bulk-import-jobs", 202) == 1
    assert klaviyo.profile_by("email", "u7@example.com") == {
        "email": "u7@example.com",
        "first_name": "User7",
        "properties": {"plan": "pro"},
    }
    sql(warehouse_path, "update users set plan = 'free' where id = 7")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_klaviyo", instance)
    assert out.summary["changed"] == 1 and len(klaviyo.profiles) == 25  # an upsert, no duplicate
    assert klaviyo.profile_by("email", "u7@example.com")["properties"] == {"plan": "free"}  # type: ignore[index]


def test_a_profile_klaviyo_refuses_is_rejected_with_its_message(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    sql(warehouse_path, "update users set email = 'nope' where id = 4")
    out = run_sync(
        defs_from_yaml(
            DEST,
            sync(match="{column: ext, field: external_id}", extra="  - {from: email, to: email}"),
        ),
        "to_klaviyo",
        instance,
    )
    assert (out.summary["succeeded"], out.summary["rejected"]) == (29, 1)
    assert rejected_records(warehouse_path) == [("4", "Invalid email address: 'nope'")]
    assert len(klaviyo.profiles) == 29 and klaviyo.profile_by("external_id", "ext-4") is None


def test_list_membership_is_added_then_removed_never_deleting_the_profile(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 12)
    defs = defs_from_yaml(DEST, sync(object_="list:VIP01", delete="delete"))
    assert run_sync(defs, "to_klaviyo", instance).status == "succeeded"
    assert len(klaviyo.lists["VIP01"]) == 12 == len(klaviyo.profiles)
    sql(warehouse_path, "delete from users where id > 9")
    out = run_sync(defs, "to_klaviyo", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 3
    on_list = {klaviyo.profiles[p]["email"] for p in klaviyo.lists["VIP01"]}
    assert on_list == {f"u{i}@example.com" for i in range(1, 10)}
    assert len(klaviyo.profiles) == 12  # removed from the list, never deleted
    assert klaviyo.count("/relationships/profiles") == 1  # one DELETE for the three


def test_events_carry_time_value_and_a_stable_unique_id(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 2100)
    yaml = sync(
        "events",
        "Placed Order",
        extra="  - {from: at, to: time}\n  - {from: amount, to: value}",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_klaviyo", instance)
    assert out.status == "succeeded" and len(klaviyo.events) == 2100
    assert klaviyo.count("/api/event-bulk-create-jobs", 202) == 3  # 1,000 events a job
    [first] = [
        e for e in klaviyo.events if klaviyo.profiles[e["profile_id"]]["email"] == "u2@example.com"
    ]
    assert first["metric"] == "Placed Order" and first["value"] == 3.0
    assert first["time"] == "2026-01-15T10:02:00+00:00"
    assert first["properties"] == {"first_name": "User2", "plan": "pro"}
    assert len({e["unique_id"] for e in klaviyo.events}) == 2100


def test_a_row_with_a_bad_event_time_is_rejected_alone(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 5)
    sql(warehouse_path, "alter table users add column t varchar; update users set t = '2026-01-02'")
    sql(warehouse_path, "update users set t = 'soon' where id = 3")
    yaml = sync("events", "Viewed", extra="  - {from: t, to: time}")
    out = run_sync(defs_from_yaml(DEST, yaml), "to_klaviyo", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (4, 1)
    [(key, error)] = rejected_records(warehouse_path)
    assert key == "3" and "is not a timestamp" in error


def test_rate_limits_are_survived_with_nothing_lost_or_doubled(
    klaviyo: FakeKlaviyo, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    klaviyo.rate_limit, klaviyo.window_s = 4, 1.0
    users(warehouse_path, 200)
    yaml = sync("events", "Plan Reviewed")
    dest = DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 20")
    out = run_sync(defs_from_yaml(dest, yaml), "to_klaviyo", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 200
    assert klaviyo.count("/api/event-bulk-create-jobs", 429) > 0
    assert len(klaviyo.events) == 200 and klaviyo.dropped_duplicates == 0
    assert len({e["unique_id"] for e in klaviyo.events}) == 200


def test_a_wrong_key_fails_the_run_saying_so(
    klaviyo: FakeKlaviyo,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KLAVIYO_KEY", "pk_wrong_secret")
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_klaviyo", instance)
    assert out.status == "failed"
    assert "Klaviyo refused the private API key" in out.summary["error"]
    assert "Incorrect authentication credentials" in out.summary["error"]
    assert "Fix:" in out.summary["error"] and "pk_wrong_secret" not in out.summary["error"]
    assert klaviyo.profiles == {}


def test_check_reads_the_account_and_the_list(klaviyo: FakeKlaviyo) -> None:
    config = {"private_key": KEY, "base_url": klaviyo.url}
    with build_destination("kl", "klaviyo", config) as dest:
        said = dest.check("list:VIP01")
        assert said == "Klaviyo account XyZ123 accepts the private key; list VIP01 exists"
        with pytest.raises(DestinationError, match="Klaviyo has no list 'NOPE'. Fix:"):
            dest.check("list:NOPE")
    assert all(e.method == "GET" for e in klaviyo.log)  # nothing written
    wrong = {**config, "private_key": "pk_nope"}
    with (
        build_destination("kl", "klaviyo", wrong) as dest,
        pytest.raises(DestinationError, match="refused the private API key") as info,
    ):
        dest.check()
    assert "pk_nope" not in str(info.value) and "Fix:" in str(info.value)


def test_the_fake_refuses_what_klaviyo_refuses(klaviyo: FakeKlaviyo) -> None:
    import httpx

    headers = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-10-15"}
    no_revision = httpx.get(
        f"{klaviyo.url}/api/accounts", headers={"Authorization": headers["Authorization"]}
    )
    assert (
        no_revision.status_code == 400 and "revision" in no_revision.json()["errors"][0]["detail"]
    )
    profile = {"type": "profile", "attributes": {"email": "a@example.com"}}
    too_many = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [profile] * 10_001}},
        }
    }
    answer = httpx.post(
        f"{klaviyo.url}/api/profile-bulk-import-jobs", json=too_many, headers=headers
    )
    assert answer.status_code == 400 and "at most 10000" in answer.json()["errors"][0]["detail"]
    assert klaviyo.jobs == {}
    klaviyo.contract_errors.clear()  # refused on purpose


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(object_="widgets"), "use object: profiles or list:<list id>"),
        (sync(delete="delete"), "never deletes Klaviyo profiles"),
        (sync(match="{column: id, field: id}"), "Klaviyo identifies profiles by email"),
        (sync("events", "list:VIP01"), "the object is the metric's name"),
        (sync(object_="list:"), "no list id after 'list:'"),
        (sync(delete="clear"), "klaviyo cannot 'clear'"),
    ],
)
def test_declarations_klaviyo_cannot_take_are_refused_at_validate(yaml: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_private_key_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.KLAVIYO_KEY }}"', "pk_literal_key")
    with pytest.raises(Exception, match="private_key") as info:
        defs_from_yaml(literal, sync())
    assert "pk_literal_key" not in str(info.value)
