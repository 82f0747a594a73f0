"""Salesforce: real syncs through Dagster against a fake Salesforce REST API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.references import remote_property_errors
from retl_dagster.destinations import Batch, Record, build_destination
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.salesforce import FakeSalesforce
from retl_dagster_tests.harness import defs_from_yaml, sql


@pytest.fixture
def sf(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    monkeypatch.setenv("SF_SECRET", "s3cret")
    monkeypatch.setenv("SF_REFRESH", "refresh-tok")
    with FakeSalesforce("cid", "s3cret", refresh_token="refresh-tok") as fake:
        monkeypatch.setenv("SF_LOGIN", fake.url)
        yield fake
        assert fake.contract_failures == []  # every body the tests sent is one Salesforce reads


def dest(extra: str = "") -> str:
    return f"""
destinations:
  sf:
    type: salesforce
    login_url: "{{{{ env.SF_LOGIN }}}}"
    client_id: cid
    client_secret: "{{{{ env.SF_SECRET }}}}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
    {extra}
"""


def sync(mode: str = "mirror", delete: str = "delete") -> str:
    return f"""
name: sf_contacts
model: {{table: people}}
primary_key: id
destination: sf
object: Contact
mode: {mode}
match: {{column: ext, field: External_Id__c}}
mappings:
  - {{from: last, to: LastName}}
  - {{from: email, to: Email}}
  - {{from: plan, to: Plan__c}}
delete_behavior: {delete}
"""


def people(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table people as select i as id, 'E' || i as ext,
        'Last' || i as last, 'p' || i || '@example.com' as email, 'pro' as plan
        from range(1, {n + 1}) t(i)""",
    )


def test_upsert_by_external_id_changes_and_deletes(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 450)
    defs = defs_from_yaml(dest(), sync())
    first = run_sync(defs, "sf_contacts", instance)
    assert first.status == "succeeded", first.summary
    assert len(sf.of_type("Contact")) == 450
    assert sf.count("/composite/sobjects/Contact/External_Id__c") == 3  # 200 + 200 + 50
    sql(warehouse_path, "update people set plan = 'free' where id <= 2")
    sql(warehouse_path, "delete from people where id > 440")
    second = run_sync(defs, "sf_contacts", instance)
    assert second.status == "succeeded", second.summary
    assert (second.summary["changed"], second.summary["removed"]) == (2, 10)
    assert len(sf.of_type("Contact")) == 440
    assert sf.logins == 2  # one per run
    assert sf.count("/query") == 0  # deletes used the Ids from the first run


def test_per_record_errors_come_back_with_salesforces_message(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 20)
    sql(warehouse_path, "update people set email = 'bad-email' where id = 5")
    sql(warehouse_path, "update people set last = null where id = 6")
    out = run_sync(defs_from_yaml(dest(), sync("upsert", "nothing")), "sf_contacts", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (18, 2)
    errors = dict(
        sql(
            warehouse_path,
            "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
        )
    )
    assert errors == {
        "5": "INVALID_EMAIL_ADDRESS: Email: invalid email address: bad-email",
        "6": "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]",
    }


def test_update_finds_ids_by_external_id_and_never_creates(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 4)
    sf.records["003000000000999"] = {
        "_type": "Contact",
        "Id": "003000000000999",
        "LastName": "Old",
        "External_Id__c": "E2",
    }
    out = run_sync(defs_from_yaml(dest(), sync("update", "nothing")), "sf_contacts", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (1, 3)
    assert sf.records["003000000000999"]["LastName"] == "Last2"
    assert len(sf.of_type("Contact")) == 1


def test_refresh_token_flow_and_request_limits(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    sf.rate_limit, sf.window_s = 2, 0.5
    people(warehouse_path, 300)
    defs = defs_from_yaml(
        dest('refresh_token: "{{ env.SF_REFRESH }}"\n    batch_size: 25'), sync("upsert", "nothing")
    )
    out = run_sync(defs, "sf_contacts", instance)
    assert out.status == "succeeded"
    assert sf.count("/composite", 403) > 0
    assert len(sf.of_type("Contact")) == 300  # nothing lost, nothing doubled


def test_an_unknown_field_fails_the_run_with_the_api_message(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 3)
    out = run_sync(
        defs_from_yaml(dest(), sync("upsert", "nothing").replace("to: Plan__c", "to: Tier__c")),
        "sf_contacts",
        instance,
    )
    assert out.status == "failed"
    assert "No such column 'Tier__c' on sobject of type Contact" in out.summary["error"]


def test_an_expired_session_logs_in_again_and_resends(sf: FakeSalesforce) -> None:
    dest = build_destination(
        "sf", "salesforce", {"login_url": sf.url, "client_id": "cid", "client_secret": "s3cret"}
    )
    batch = Batch(
        "s",
        "r",
        "insert",
        "Contact",
        [Record("added", "1", {"LastName": "A", "Email": "a@example.com"})],
    )
    assert dest.deliver(batch).rejected == {}
    sf.expire_sessions()
    batch2 = Batch("s", "r", "insert", "Contact", [Record("added", "2", {"LastName": "B"})])
    assert dest.deliver(batch2).rejected == {}
    assert sf.logins == 2 and sf.count("/composite/sobjects", 401) == 1
    assert len(sf.of_type("Contact")) == 2


def test_validate_checks_fields_against_describe(sf: FakeSalesforce) -> None:
    bad = sync().replace("to: Plan__c", "to: Tier__c")
    [error] = remote_property_errors(defs_from_yaml(dest(), bad))
    assert "field 'mappings[3].to': 'Tier__c' is not a property of salesforce Contact" in error
    assert "use one of Email, External_Id__c, FirstName, Id, LastName, Plan__c" in error


def test_overwrite_false_fills_only_what_salesforce_has_empty(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 3)
    sf.records["003000000000901"] = {
        "_type": "Contact",
        "Id": "003000000000901",
        "External_Id__c": "E1",
        "LastName": "Typed By A Rep",
        "Email": None,
    }
    yaml = (
        sync("upsert", "nothing")
        .replace("{from: last, to: LastName}", "{from: last, to: LastName, overwrite: false}")
        .replace("{from: email, to: Email}", "{from: email, to: Email, overwrite: false}")
    )
    out = run_sync(defs_from_yaml(dest(), yaml), "sf_contacts", instance)
    assert out.status == "succeeded", out.summary
    by_ext = {r["External_Id__c"]: r for r in sf.of_type("Contact")}
    assert by_ext["E1"]["LastName"] == "Typed By A Rep"  # kept
    assert by_ext["E1"]["Email"] == "p1@example.com"  # was empty: filled
    assert by_ext["E1"]["Plan__c"] == "pro"  # overwrite (the default)
    assert by_ext["E2"]["LastName"] == "Last2"  # new: everything
