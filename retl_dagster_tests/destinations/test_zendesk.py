"""Zendesk Support: users (bulk create-or-update jobs) and organizations through Dagster against
a fake Zendesk that holds the API reference's rules (Zendesk publishes no Python SDK)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import DestinationError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.zendesk import FakeZendesk
from retl_dagster_tests.harness import defs_from_yaml, rejected_records, sql

EMAIL = "ops@example.com"
TOKEN = "zd-token-0123456789"


@pytest.fixture
def zendesk(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeZendesk]:
    monkeypatch.setenv("ZENDESK_TOKEN", TOKEN)
    fake = FakeZendesk(EMAIL, TOKEN)
    with fake:
        monkeypatch.setenv("ZENDESK_URL", fake.url)
        yield fake
    assert fake.refused == []  # every body our client sent fits the reference's rules


DEST = f"""
destinations:
  zendesk:
    type: zendesk
    subdomain: acme
    email: {EMAIL}
    api_token: "{{{{ env.ZENDESK_TOKEN }}}}"
    base_url: "{{{{ env.ZENDESK_URL }}}}"
    poll_interval_s: 0.05
    backoff_initial_s: 0.05
    backoff_max_s: 2
"""


def sync(
    object_: str = "users",
    delete: str = "nothing",
    match: str = "{column: ext, field: external_id}",
    mappings: str = "  - {from: first, to: name}\n  - {from: email, to: email}\n"
    "  - {from: plan, to: plan}",
) -> str:
    return f"""
name: to_zendesk
model: {{table: users}}
primary_key: id
destination: zendesk
object: "{object_}"
mode: upsert
match: {match}
mappings:
{mappings}
delete_behavior: {delete}
"""


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'ext-' || i as ext,
        'u' || i || '@example.com' as email, 'User ' || i as first, 'pro' as plan
        from range(1, {n + 1}) t(i)""",
    )


def test_users_are_created_then_updated_in_jobs_of_100(
    zendesk: FakeZendesk, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 250)
    zendesk.job_polls = 2  # queued twice, then completed: the client waits for it
    out = run_sync(defs_from_yaml(DEST, sync()), "to_zendesk", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 250
    assert len(zendesk.users) == 250
    assert zendesk.count("/create_or_update_many", 200) == 3  # 100 + 100 + 50
    u7 = zendesk.user_by("external_id", "ext-7")
    assert u7 is not None
    assert (u7["name"], u7["email"], u7["user_fields"]) == (
        "User 7",
        "u7@example.com",
        {"plan": "pro"},
    )
    sql(warehouse_path, "update users set plan = 'free', first = 'Seven' where id = 7")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_zendesk", instance)
    assert out.summary["changed"] == 1 and len(zendesk.users) == 250  # updated, not duplicated
    u7 = zendesk.user_by("external_id", "ext-7")
    assert u7 is not None and (u7["name"], u7["user_fields"]) == ("Seven", {"plan": "free"})


def test_a_user_zendesk_refuses_is_rejected_with_its_message(
    zendesk: FakeZendesk, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    sql(warehouse_path, "update users set email = 'nope@' where id = 4")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_zendesk", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (29, 1)
    assert rejected_records(warehouse_path) == [("4", "Email: nope@ is not properly formatted")]
    assert len(zendesk.users) == 29 and zendesk.user_by("external_id", "ext-4") is None


def test_removed_rows_delete_their_users_by_the_kept_ids(
    zendesk: FakeZendesk, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 12)
    defs = defs_from_yaml(DEST, sync(delete="delete"))
    assert run_sync(defs, "to_zendesk", instance).status == "succeeded"
    gone = {zendesk.find_user("external_id", f"ext-{i}") for i in (10, 11, 12)}
    sql(warehouse_path, "delete from users where id > 9")
    out = run_sync(defs, "to_zendesk", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 3
    assert len(zendesk.users) == 9 and zendesk.deleted["users"] == gone
    assert zendesk.count("/users/destroy_many", 200) == 1  # one job for the three


def test_organizations_are_upserted_by_external_id_and_a_refused_one_rejected(
    zendesk: FakeZendesk, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 5)
    sql(warehouse_path, "update users set first = 'User 1' where id = 2")  # a duplicate name
    yaml = sync(
        "organizations",
        delete="delete",
        mappings="  - {from: first, to: name}\n  - {from: plan, to: tier}",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_zendesk", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (4, 1)
    assert rejected_records(warehouse_path) == [
        (
            "2",
            "HTTP 422: RecordInvalid: Record validation errors: "
            "Name: User 1 has already been taken",
        )
    ]
    sql(
        warehouse_path,
        "update users set plan = 'gold' where id = 3; update users set first = 'Two' where id = 2;"
        " delete from users where id = 5",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_zendesk", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 1
    by_ext = {o["external_id"]: o for o in zendesk.organizations.values()}
    assert sorted(by_ext) == ["ext-1", "ext-2", "ext-3", "ext-4"]  # ext-2 fixed and retried
    assert by_ext["ext-3"]["organization_fields"] == {"tier": "gold"}


def test_rate_limits_are_survived_with_nothing_lost_or_doubled(
    zendesk: FakeZendesk, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    zendesk.rate_limit, zendesk.window_s = 3, 1.0
    users(warehouse_path, 200)
    dest = DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 20")
    out = run_sync(defs_from_yaml(dest, sync()), "to_zendesk", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 200
    assert any(e.status == 429 for e in zendesk.log)
    assert len(zendesk.users) == 200
    assert len({u["external_id"] for u in zendesk.users.values()}) == 200


def test_a_wrong_token_fails_the_run_saying_so(
    zendesk: FakeZendesk,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZENDESK_TOKEN", "zd-wrong-secret")
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_zendesk", instance)
    assert out.status == "failed"
    assert "Zendesk refused the credentials" in out.summary["error"]
    assert "Couldn't authenticate you" in out.summary["error"]
    assert "Fix:" in out.summary["error"] and "zd-wrong-secret" not in out.summary["error"]
    assert zendesk.users == {}


def test_check_shows_the_authenticated_user(zendesk: FakeZendesk) -> None:
    config = {"subdomain": "acme", "email": EMAIL, "api_token": TOKEN, "base_url": zendesk.url}
    with build_destination("zd", "zendesk", config) as dest:
        assert dest.check() == f"Zendesk acme: authenticated as {EMAIL} (admin)"
    assert all(e.method == "GET" for e in zendesk.log)
    with (
        build_destination("zd", "zendesk", {**config, "api_token": "nope"}) as dest,
        pytest.raises(DestinationError, match="refused the credentials") as info,
    ):
        dest.check()
    assert "nope" not in str(info.value).replace("anonymous", "")


def test_the_fake_refuses_what_zendesk_refuses(zendesk: FakeZendesk) -> None:
    auth = (f"{EMAIL}/token", TOKEN)
    user = {"external_id": "x", "name": "X"}
    url = f"{zendesk.url}/api/v2/users/create_or_update_many"
    too_many = httpx.post(url, json={"users": [user] * 101}, auth=auth)
    assert too_many.status_code == 400 and "at most 100" in too_many.json()["description"]
    wrong = httpx.post(url, json={"users": [user]}, auth=(f"{EMAIL}/token", "bad"))
    assert wrong.status_code == 401 and wrong.json() == {"error": "Couldn't authenticate you"}
    assert zendesk.jobs == {}
    zendesk.refused.clear()  # refused on purpose


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(object_="tickets"), "zendesk has no object 'tickets'"),
        (sync(match="{column: id, field: id}"), "Zendesk matches users by external_id or email"),
        (
            sync("organizations", match="{column: email, field: email}"),
            "Zendesk matches organizations by external_id",
        ),
        (sync(mappings="  - {from: plan, to: plan}"), "Zendesk requires a name"),
        (sync(delete="clear"), "zendesk cannot 'clear'"),
    ],
)
def test_declarations_zendesk_cannot_take_are_refused_at_validate(yaml: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_api_token_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.ZENDESK_TOKEN }}"', "zd-literal-token")
    with pytest.raises(Exception, match="api_token") as info:
        defs_from_yaml(literal, sync())
    assert "zd-literal-token" not in str(info.value)
