"""Intercom: contacts (search, then create or update) and companies through Dagster against a
fake Intercom that holds every body to the official `python-intercom` SDK's request models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import DestinationError
from retl_dagster.destinations.impl.intercom.client import rate_limit_reset
from retl_dagster.runner import run_sync
from retl_dagster_tests.contracts.intercom import ContractError, check_request
from retl_dagster_tests.fakes.intercom import FakeIntercom
from retl_dagster_tests.harness import defs_from_yaml, rejected_records, sql

TOKEN = "ic-token-0123456789"


@pytest.fixture
def intercom(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIntercom]:
    monkeypatch.setenv("INTERCOM_TOKEN", TOKEN)
    fake = FakeIntercom(TOKEN)
    with fake:
        monkeypatch.setenv("INTERCOM_URL", fake.url)
        yield fake
    assert fake.contract_errors == []  # every body fits the SDK's request models
    assert fake.versions <= {"2.11"}


DEST = """
destinations:
  intercom:
    type: intercom
    access_token: "{{ env.INTERCOM_TOKEN }}"
    base_url: "{{ env.INTERCOM_URL }}"
    backoff_initial_s: 0.05
    backoff_max_s: 3
"""


def sync(
    object_: str = "contacts",
    delete: str = "nothing",
    match: str = "{column: ext, field: external_id}",
    mappings: str = "  - {from: first, to: name}\n  - {from: email, to: email}\n"
    "  - {from: plan, to: plan}\n  - {from: signed_up, to: signed_up_at}",
) -> str:
    return f"""
name: to_intercom
model: {{table: users}}
primary_key: id
destination: intercom
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
        'u' || i || '@example.com' as email, 'User ' || i as first, 'pro' as plan,
        timestamp '2026-01-15 10:00:00' as signed_up from range(1, {n + 1}) t(i)""",
    )


def test_contacts_are_created_then_updated_by_their_kept_ids(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 30)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_intercom", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 30
    assert len(intercom.contacts) == 30
    assert intercom.count("/contacts/search", 200) == 30  # each looked up once, then created
    c7 = intercom.find("external_id", "ext-7")
    assert c7 is not None
    assert (c7["role"], c7["name"], c7["email"], c7["signed_up_at"]) == (
        "user",
        "User 7",
        "u7@example.com",
        1768471200,
    )
    assert c7["custom_attributes"] == {"plan": "pro"}
    sql(warehouse_path, "update users set plan = 'free', first = 'Seven' where id = 7")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_intercom", instance)
    assert out.summary["changed"] == 1 and len(intercom.contacts) == 30
    assert intercom.count("/contacts/search") == 30  # the kept id: no search
    assert intercom.log[-1].method == "PUT" and intercom.log[-1].path == f"/contacts/{c7['id']}"
    c7 = intercom.find("external_id", "ext-7")
    assert c7 is not None and (c7["name"], c7["custom_attributes"]) == ("Seven", {"plan": "free"})


def test_an_existing_contact_is_found_by_email_and_updated(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    intercom.contacts["pre"] = {"type": "contact", "id": "pre", "email": "u2@example.com"}
    yaml = sync(match="{column: email, field: email}", mappings="  - {from: first, to: name}")
    out = run_sync(defs_from_yaml(DEST, yaml), "to_intercom", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 3
    assert len(intercom.contacts) == 3 and intercom.contacts["pre"]["name"] == "User 2"


def test_a_contact_intercom_refuses_is_rejected_with_its_message(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 10)
    sql(warehouse_path, "update users set email = 'nope@' where id = 4")
    out = run_sync(defs_from_yaml(DEST, sync()), "to_intercom", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (9, 1)
    assert rejected_records(warehouse_path) == [
        ("4", "parameter_invalid: Invalid email address: nope@")
    ]
    assert len(intercom.contacts) == 9 and intercom.find("external_id", "ext-4") is None


def test_removed_rows_delete_their_contacts(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 6)
    defs = defs_from_yaml(DEST, sync(delete="delete"))
    assert run_sync(defs, "to_intercom", instance).status == "succeeded"
    gone = {intercom.find("external_id", f"ext-{i}")["id"] for i in (5, 6)}  # type: ignore[index]
    sql(warehouse_path, "delete from users where id > 4")
    out = run_sync(defs, "to_intercom", instance)
    assert out.status == "succeeded" and out.summary["removed"] == 2
    assert len(intercom.contacts) == 4 and intercom.deleted == gone


def test_companies_are_upserted_by_company_id(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 4)
    yaml = sync(
        "companies",
        match="{column: ext, field: company_id}",
        mappings="  - {from: first, to: name}\n  - {from: plan, to: plan}\n"
        "  - {from: id, to: size}\n  - {from: email, to: billing_email}",
    )
    out = run_sync(defs_from_yaml(DEST, yaml), "to_intercom", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 4
    sql(warehouse_path, "update users set plan = 'gold' where id = 3")
    out = run_sync(defs_from_yaml(DEST, yaml), "to_intercom", instance)
    assert out.summary["changed"] == 1 and sorted(intercom.companies) == [
        "ext-1", "ext-2", "ext-3", "ext-4",
    ]  # fmt: skip
    c3 = intercom.companies["ext-3"]
    assert (c3["name"], c3["plan"], c3["size"]) == ("User 3", "gold", 3)
    assert c3["custom_attributes"] == {"billing_email": "u3@example.com"}


def test_rate_limits_are_survived_with_nothing_lost_or_doubled(
    intercom: FakeIntercom, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    intercom.rate_limit, intercom.window_s = 20, 1.0
    users(warehouse_path, 40)
    dest = DEST + "    batch_size: 10\n    concurrency: 4\n"
    out = run_sync(defs_from_yaml(dest, sync()), "to_intercom", instance)
    assert out.status == "succeeded" and out.summary["succeeded"] == 40
    assert any(e.status == 429 for e in intercom.log)
    assert len(intercom.contacts) == 40
    assert len({c["external_id"] for c in intercom.contacts.values()}) == 40
    assert intercom.count("/contacts", 409) == 0


def test_a_wrong_token_fails_the_run_saying_so(
    intercom: FakeIntercom,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INTERCOM_TOKEN", "ic-wrong-secret")
    users(warehouse_path, 3)
    out = run_sync(defs_from_yaml(DEST, sync()), "to_intercom", instance)
    assert out.status == "failed"
    error = out.summary["error"]
    assert "Intercom refused the access token" in error and "unauthorized" in error
    assert "Fix:" in error and "region" in error and "ic-wrong-secret" not in error
    assert intercom.contacts == {}


def test_check_shows_the_admin(intercom: FakeIntercom) -> None:
    config = {"access_token": TOKEN, "base_url": intercom.url}
    with build_destination("ic", "intercom", config) as dest:
        assert dest.check() == "Intercom (us): authenticated as ops@example.com in Acme"
    with (
        build_destination("ic", "intercom", {**config, "access_token": "nope"}) as dest,
        pytest.raises(DestinationError, match="refused the access token"),
    ):
        dest.check()


def test_the_fake_refuses_what_intercom_refuses(intercom: FakeIntercom) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{intercom.url}/contacts"
    ok = httpx.post(url, json={"role": "user", "external_id": "a"}, headers=headers)
    assert ok.status_code == 200
    dup = httpx.post(url, json={"role": "user", "external_id": "a"}, headers=headers)
    assert dup.status_code == 409 and dup.json()["errors"][0]["code"] == "conflict"
    missing = httpx.put(f"{url}/nope", json={"name": "x"}, headers=headers)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "not_found"
    anon = httpx.post(url, json={"role": "user"})
    assert anon.status_code == 401 and anon.json()["errors"][0]["code"] == "unauthorized"
    wrong = httpx.post(url, json={"role": "user", "external_id": 5, "tier": "x"}, headers=headers)
    assert wrong.status_code == 400 and "tier: Extra inputs are not permitted" in wrong.text
    intercom.contract_errors.clear()  # refused on purpose
    intercom.versions.clear()  # sent by hand, without the header


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        ("POST", "/contacts", {"name": "x"}, "needs one of email, external_id, role"),
        ("POST", "/contacts", {"role": "user", "plan": "pro"}, "plan: Extra inputs"),
        ("PUT", "/contacts/1", {"signed_up_at": "2026-01-01"}, "signed_up_at: Input should be"),
        (
            "POST",
            "/contacts/search",
            {"query": {"field": "email", "operator": "==", "value": "a"}},
            "query.operator",
        ),
        ("POST", "/companies", {"company_id": "c", "size": "big"}, "size: Input should be"),
        ("POST", "/tags", {"id": "1"}, "name: Field required"),
    ],
)
def test_the_contract_refuses_a_wrong_body(
    method: str, path: str, body: dict[str, object], problem: str
) -> None:
    with pytest.raises(ContractError, match=problem):
        check_request(method, path, body)


def test_the_contract_takes_the_bodies_we_send() -> None:
    check_request("POST", "/contacts", {"role": "user", "external_id": "e", "email": "a@b.co"})
    check_request("PUT", "/contacts/1", {"email": None, "custom_attributes": {"a": 1}})
    check_request(
        "POST", "/contacts/search", {"query": {"field": "email", "operator": "=", "value": "a"}}
    )
    check_request("POST", "/companies", {"company_id": "c", "size": 3, "monthly_spend": 10})
    check_request("POST", "/tags", {"name": "vip"})


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(object_="tickets"), "intercom has no object 'tickets'"),
        (
            sync(match="{column: id, field: id}"),
            "Intercom matches contacts by external_id or email",
        ),
        (
            sync("companies", match="{column: ext, field: external_id}"),
            "Intercom matches companies by company_id",
        ),
        (
            sync("companies", delete="delete", match="{column: ext, field: company_id}"),
            "intercom does not delete companies",
        ),
        (sync(delete="clear"), "intercom cannot 'clear'"),
    ],
)
def test_declarations_intercom_cannot_take_are_refused_at_validate(yaml: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_access_token_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.INTERCOM_TOKEN }}"', "ic-literal-token")
    with pytest.raises(Exception, match="access_token") as info:
        defs_from_yaml(literal, sync())
    assert "ic-literal-token" not in str(info.value)


def test_a_429_waits_until_x_ratelimit_reset() -> None:
    reset = int(time.time()) + 7
    answer = httpx.Response(429, headers={"X-RateLimit-Reset": str(reset)})
    wait = rate_limit_reset(answer)
    assert wait is not None and 5 < wait <= 7
    assert rate_limit_reset(httpx.Response(429, headers={"Retry-After": "2"})) == 2
