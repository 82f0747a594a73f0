"""Customer.io: people (identify, delete) and events through Dagster against a fake Track API
whose every batch body is checked against the Track API v2 contract (contracts/customerio.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import DestinationError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.customerio import FakeCustomerIO
from retl_dagster_tests.harness import defs_from_yaml, rejected_records, sql

SITE, KEY = "site0123", "cio_track_key_abcdef"


@pytest.fixture
def cio(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCustomerIO]:
    monkeypatch.setenv("CIO_KEY", KEY)
    fake = FakeCustomerIO(SITE, KEY)
    with fake:
        monkeypatch.setenv("CIO_URL", fake.url)
        yield fake
    assert fake.contract_errors == []  # every body fit the Track API v2 batch contract


DEST = """
destinations:
  cio:
    type: customerio
    site_id: site0123
    api_key: "{{ env.CIO_KEY }}"
    base_url: "{{ env.CIO_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
"""


def sync(
    mode: str = "upsert",
    object_: str = "people",
    delete: str = "nothing",
    extra: str = "",
    match: str = "{column: ext, field: id}",
) -> str:
    return f"""
name: to_cio
model: {{table: users}}
primary_key: id
destination: cio
object: "{object_}"
mode: {mode}
match: {match}
mappings:
  - {{from: email, to: email}}
  - {{from: plan, to: plan}}
{extra}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'ext-' || i as ext,
        'u' || i || '@example.com' as email, 'pro' as plan,
        timestamp '2026-01-15 10:00:00' + to_minutes(i::bigint) as at
        from range(1, {n + 1}) t(i)""",
    )


def test_people_are_identified_then_updated_then_deleted(
    cio: FakeCustomerIO, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    defs = defs_from_yaml(DEST, sync(delete="delete"))
    out = run_sync(defs, "to_cio", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 30
    assert len(cio.people) == 30 and cio.count("/api/v2/batch", 200) == 1
    assert cio.person("id", "ext-7") == {
        "id": "ext-7",
        "email": "u7@example.com",
        "attributes": {"email": "u7@example.com", "plan": "pro"},
    }
    sql(warehouse_path, "update users set plan = 'free' where id = 7")
    out = run_sync(defs, "to_cio", instance)
    assert out.summary["changed"] == 1 and len(cio.people) == 30  # an upsert, no duplicate
    assert cio.person("id", "ext-7")["attributes"]["plan"] == "free"  # type: ignore[index]
    sql(warehouse_path, "delete from users where id > 27")
    out = run_sync(defs, "to_cio", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 3
    assert len(cio.people) == 27 and cio.person("id", "ext-28") is None


def test_a_person_customerio_refuses_is_rejected_with_its_message(
    cio: FakeCustomerIO, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 20)
    sql(warehouse_path, "update users set email = 'nope' where id = 4")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_cio", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (19, 1)
    assert rejected_records(warehouse_path) == [
        ("4", "invalid email address: 'nope' (attributes.email)")
    ]
    assert len(cio.people) == 19 and cio.person("id", "ext-4") is None
    assert cio.count("/api/v2/batch") == 1  # the answer named the row: nothing was resent


def test_events_carry_the_event_time_and_a_stable_ulid(
    cio: FakeCustomerIO, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 2500)
    yaml = sync("events", "plan_checked", extra="  - {from: at, to: timestamp}")
    out = run_sync(defs_from_yaml(DEST, yaml), "to_cio", instance)
    assert out.status == "succeeded" and len(cio.events) == 2500
    assert cio.count("/api/v2/batch", 200) == 3  # 1,000 records a batch
    [ev] = [e for e in cio.events if cio.people[e["cio_id"]]["id"] == "ext-2"]
    assert ev["name"] == "plan_checked" and ev["timestamp"] == 1768471320  # 2026-01-15T10:02Z
    assert ev["attributes"] == {"email": "u2@example.com", "plan": "pro"}
    assert len({e["id"] for e in cio.events}) == 2500


def test_rate_limits_are_survived_with_nothing_lost_or_doubled(
    cio: FakeCustomerIO, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    cio.rate_limit, cio.window_s = 3, 1.0
    users(warehouse_path, 200)
    dest = DEST.replace("backoff_max_s: 1", "backoff_max_s: 1\n    batch_size: 20")
    out = run_sync(defs_from_yaml(dest, sync("events", "viewed")), "to_cio", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 200
    assert cio.count("/api/v2/batch", 429) > 0
    assert len(cio.events) == 200 and cio.dropped_duplicates == 0


def test_a_wrong_key_fails_the_run_saying_so(
    cio: FakeCustomerIO,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIO_KEY", "wrong_secret_key")
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_cio", instance)
    assert out.status == "failed"
    error = out.summary["error"]
    assert "Customer.io refused the site id and API key" in error and "Fix:" in error
    assert "wrong_secret_key" not in error and cio.people == {}


def test_check_reads_the_region_and_names_a_wrong_one(cio: FakeCustomerIO) -> None:
    config = {"site_id": SITE, "api_key": KEY, "base_url": cio.url}
    with build_destination("c", "customerio", config) as dest:
        assert dest.check() == "Customer.io accepts the Track API key (workspace in the US region)"
    assert all(e.method == "GET" for e in cio.log)  # nothing written
    with (
        build_destination("c", "customerio", {**config, "api_key": "nope_key"}) as dest,
        pytest.raises(DestinationError, match="refused the site id and API key") as info,
    ):
        dest.check()
    assert "nope_key" not in str(info.value)


def test_the_fake_refuses_what_customerio_refuses(cio: FakeCustomerIO) -> None:
    import httpx

    auth = (SITE, KEY)
    url = f"{cio.url}/api/v2/batch"
    assert httpx.post(url, json={"batch": []}, auth=(SITE, "bad")).status_code == 401
    op = {"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {}}
    big = {**op, "attributes": {"blob": "x" * 40_000}}
    answer = httpx.post(url, json={"batch": [op, big]}, auth=auth)
    assert answer.status_code == 207
    assert answer.json()["errors"][0]["batch_index"] == 1 and len(cio.people) == 1
    assert httpx.post(url, json={"batch": [op] * 8_000}, auth=auth).status_code == 413
    wrong = {**op, "identifiers": {"phone": "+15555550100"}}
    assert httpx.post(url, json={"batch": [wrong]}, auth=auth).status_code == 400
    cio.contract_errors.clear()  # refused on purpose


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(object_="widgets"), "is not 'people'"),
        (sync("events", "people"), "the object is the event's name"),
        (sync(match="{column: ext, field: phone}"), "Customer.io identifies people by id"),
        (sync("events", "viewed", delete="delete"), "events are insert-only"),
        (sync(delete="clear"), "customerio cannot 'clear'"),
    ],
)
def test_declarations_customerio_cannot_take_are_refused_at_validate(
    yaml: str, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_api_key_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.CIO_KEY }}"', "literal_track_key")
    with pytest.raises(Exception, match="api_key") as info:
        defs_from_yaml(literal, sync())
    assert "literal_track_key" not in str(info.value)
