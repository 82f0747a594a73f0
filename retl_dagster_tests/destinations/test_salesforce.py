"""Salesforce: real syncs through Dagster against a fake Salesforce REST API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from retl_dagster.components.references import remote_property_errors
from retl_dagster.destinations import Batch, Record, build_destination
from retl_dagster.destinations.base import DestinationConfigError
from retl_dagster.destinations.http import GaveUp
from retl_dagster.destinations.impl.salesforce import SalesforceDestination
from retl_dagster.destinations.impl.salesforce.exceptions import SalesforceBulkJobError
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


# -- Bulk API 2.0 -------------------------------------------------------------------------------
def bulk_dest(sf: FakeSalesforce, **options: Any) -> SalesforceDestination:
    config = {
        "login_url": sf.url,
        "client_id": "cid",
        "client_secret": "s3cret",
        "api": "bulk",
        "bulk_poll_interval_s": 0.01,
        "backoff_initial_s": 0.01,
        **options,
    }
    dest = build_destination("sf", "salesforce", config)
    assert isinstance(dest, SalesforceDestination)
    return dest


def contact(key: str, **fields: Any) -> Record:
    fields = {"LastName": f"Last{key}", "External_Id__c": f"E{key}", **fields}
    return Record("added", key, fields, match_value=f"E{key}")


def by_ext(sf: FakeSalesforce, sobject: str = "Contact") -> dict[str, dict[str, Any]]:
    return {str(r["External_Id__c"]): r for r in sf.of_type(sobject)}


def bulk_requests(sf: FakeSalesforce) -> list[tuple[str, str]]:
    """The Bulk API requests made, job ids as {id}."""
    return [
        (e.method, re.sub(r"/750\d+", "/{id}", e.path.split("/jobs/")[1]))
        for e in sf.log
        if "/jobs/" in e.path
    ]


def test_bulk_upsert_matches_each_result_to_its_record(sf: FakeSalesforce) -> None:
    sf.polls_in_progress = 2  # the job reads InProgress twice before it completes
    sf.records["003000000000777"] = {
        "_type": "Contact",
        "Id": "003000000000777",
        "External_Id__c": "E2",
        "LastName": "Old",
    }
    records = [contact(str(i), Email=f"p{i}@example.com") for i in range(1, 9)]
    records[2].fields["Email"] = "not-an-email"  # key 3
    records[5].fields["LastName"] = None  # key 6
    out = bulk_dest(sf).deliver(Batch("s", "r", "upsert", "Contact", records, "External_Id__c"))
    assert out.rejected == {
        "3": "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email",
        "6": "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]",
    }
    # Results came back shuffled; each id is the one of the record's own row.
    assert set(out.dest_ids) == {"1", "2", "4", "5", "7", "8"}
    for key, rid in out.dest_ids.items():
        assert sf.records[rid]["External_Id__c"] == f"E{key}"
    assert out.dest_ids["2"] == "003000000000777"  # upserted onto the existing record
    assert by_ext(sf)["E2"]["LastName"] == "Last2"
    assert bulk_requests(sf) == [
        ("POST", "ingest"),
        ("PUT", "ingest/{id}/batches"),
        ("PATCH", "ingest/{id}"),
        ("GET", "ingest/{id}"),
        ("GET", "ingest/{id}"),
        ("GET", "ingest/{id}"),
        ("GET", "ingest/{id}/successfulResults/"),
        ("GET", "ingest/{id}/failedResults/"),
    ]
    [job] = sf.jobs.values()
    assert (job["operation"], job["externalIdFieldName"], job["lineEnding"]) == (
        "upsert",
        "External_Id__c",
        "LF",
    )
    assert job["uploads"][0].splitlines()[0] == "LastName,Email,External_Id__c"
    assert job["uploads"][0].splitlines()[3] == "Last3,not-an-email,E3"
    assert "\r" not in job["uploads"][0]


def test_bulk_update_and_delete_by_id(sf: FakeSalesforce) -> None:
    dest = bulk_dest(sf)
    created = dest.deliver(
        Batch("s", "r", "insert", "Contact", [contact(str(i)) for i in range(1, 5)])
    )
    assert created.rejected == {} and len(created.dest_ids) == 4
    ids = created.dest_ids
    updates = [
        Record("changed", "1", {"LastName": "New1"}, match_value="E1", dest_id=ids["1"]),
        Record("changed", "2", {"LastName": "New2"}, match_value="E2"),  # Id found by SOQL
        Record("changed", "9", {"LastName": "New9"}, match_value="E9"),  # not in Salesforce
    ]
    out = dest.deliver(Batch("s", "r", "update", "Contact", updates, "External_Id__c"))
    assert out.rejected == {
        "9": "NOT_FOUND: no Contact with External_Id__c = 'E9'; update mode never creates records"
    }
    assert (sf.records[ids["1"]]["LastName"], sf.records[ids["2"]]["LastName"]) == (
        "New1",
        "New2",
    )
    del sf.records[ids["4"]]  # deleted in Salesforce meanwhile: its removal is still done
    removes = [Record("removed", k, match_value=f"E{k}", dest_id=ids[k]) for k in ("1", "2", "4")]
    gone = dest.deliver(Batch("s", "r", "upsert", "Contact", removes, "External_Id__c"))
    assert gone.rejected == {} and gone.dest_ids == {}
    assert set(sf.records) == {ids["3"]}
    delete_job = list(sf.jobs.values())[-1]
    assert delete_job["operation"] == "delete"
    assert delete_job["uploads"][0].splitlines()[0] == "Id"


def test_hard_delete_goes_through_bulk_whatever_the_size(sf: FakeSalesforce) -> None:
    dest = bulk_dest(sf, api="auto", hard_delete=True)
    ids = dest.deliver(Batch("s", "r", "insert", "Contact", [contact("1")])).dest_ids
    assert sf.jobs == {}  # one record: sObject Collections
    out = dest.deliver(
        Batch("s", "r", "upsert", "Contact", [Record("removed", "1", dest_id=ids["1"])])
    )
    assert out.rejected == {} and sf.records == {}
    assert [j["operation"] for j in sf.jobs.values()] == ["hardDelete"]
    with pytest.raises(DestinationConfigError, match="hard_delete goes through Bulk API 2.0"):
        bulk_dest(sf, api="rest", hard_delete=True)


def test_bulk_csv_writes_each_type_as_salesforce_reads_it(sf: FakeSalesforce) -> None:
    sf.records["001000000000555"] = {
        "_type": "Account",
        "Id": "001000000000555",
        "External_Id__c": "A1",
        "Name": "Kept",
        "Website": "old.example.com",
        "Revenue__c": 5.0,
    }
    dest = bulk_dest(sf)
    dest.prepare(
        "Account",
        "External_Id__c",
        {"Last_Seen__c": "TIMESTAMP", "Since__c": "DATE"},
        "VARCHAR",
    )
    fields = {
        "Name": 'Acme, "the" company\nand sons',
        "Active__c": True,
        "Since__c": "2024-02-29",
        "Last_Seen__c": "2024-03-01T10:20:30.123456",  # a TIMESTAMP: UTC
        "Revenue__c": 1234.5,
        "Website": None,  # clears it
    }
    records = [
        Record("changed", "1", fields, match_value="A1"),
        Record(
            "added",
            "2",
            {"Name": "B", "Last_Seen__c": "2024-03-01T12:00:00+02:00", "Active__c": False},
            match_value="A2",
        ),
        Record("added", "3", {"Name": "C", "Revenue__c": {"amount": 1}}, match_value="A3"),
    ]
    batch = Batch("s", "r", "upsert", "Account", records, "External_Id__c")
    out = dest.deliver(batch)
    assert out.rejected == {
        "3": 'a Salesforce field takes one value (text, number, boolean, date), not {"amount":1}'
    }
    a1, a2 = by_ext(sf, "Account")["A1"], by_ext(sf, "Account")["A2"]
    assert a1["Name"] == 'Acme, "the" company\nand sons'
    assert (a1["Active__c"], a1["Since__c"], a1["Revenue__c"]) == (True, "2024-02-29", 1234.5)
    assert a1["Last_Seen__c"] == "2024-03-01T10:20:30.123Z"
    assert a1["Website"] is None
    assert (a2["Last_Seen__c"], a2["Active__c"]) == ("2024-03-01T10:00:00.000Z", False)
    upload = list(sf.jobs.values())[0]["uploads"][0]
    assert "#N/A" in upload and '"Acme, ""the"" company\nand sons"' in upload
    # A fill-only field Salesforce already has is an empty cell: left as it is.
    sf.records["001000000000555"]["Website"] = "kept.example.com"
    fill = Batch(
        "s",
        "r",
        "upsert",
        "Account",
        [
            Record("changed", "1", {"Name": "N", "Website": "new.example.com"}, match_value="A1"),
            Record("added", "9", {"Name": "M", "Website": "m.example.com"}, match_value="A9"),
        ],
        "External_Id__c",
        fill_only=frozenset({"Website"}),
    )
    assert dest.deliver(fill).rejected == {}
    assert by_ext(sf, "Account")["A1"]["Website"] == "kept.example.com"
    assert by_ext(sf, "Account")["A9"]["Website"] == "m.example.com"
    assert list(sf.jobs.values())[-1]["uploads"][0].splitlines()[:2] == [
        "Name,Website,External_Id__c",
        "N,,A1",
    ]


def test_a_failed_job_fails_the_batch_with_salesforces_message(sf: FakeSalesforce) -> None:
    records = [Record("added", "1", {"LastName": "A", "Tier__c": "gold"}, match_value="E1")]
    with pytest.raises(SalesforceBulkJobError) as failed:
        bulk_dest(sf).deliver(Batch("s", "r", "upsert", "Contact", records, "External_Id__c"))
    assert "ended Failed: InvalidBatch : Field name not found : Tier__c" in str(failed.value)
    assert sf.records == {}


def test_a_job_stopped_part_way_keeps_what_it_processed(sf: FakeSalesforce) -> None:
    sf.daily_records = 3  # the org's 24-hour allocation runs out after three rows
    dest = bulk_dest(sf)
    records = [contact(str(i)) for i in range(1, 6)]
    records[1].fields["LastName"] = None
    out = dest.deliver(Batch("s", "r", "insert", "Contact", records))
    assert set(out.dest_ids) == {"1", "3"}
    assert out.rejected["2"] == "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]"
    assert set(out.rejected) == {"2", "4", "5"}
    assert "ended Failed: ExceededQuota" in out.rejected["4"]
    assert "sent again by the next run" in out.rejected["5"]
    assert len(sf.of_type("Contact")) == 2
    # The run fails at its next batch, before sending anything more.
    with pytest.raises(SalesforceBulkJobError, match="ExceededQuota"):
        dest.deliver(Batch("s", "r", "insert", "Contact", [contact("6")]))
    assert len(sf.jobs) == 1


def test_a_job_past_its_timeout_is_aborted(sf: FakeSalesforce) -> None:
    sf.stall = True
    dest = bulk_dest(sf, bulk_timeout_s=0.3, bulk_poll_interval_s=0.02, bulk_poll_max_s=0.05)
    started = time.monotonic()
    with pytest.raises(SalesforceBulkJobError) as failed:
        dest.deliver(Batch("s", "r", "insert", "Contact", [contact("1"), contact("2")]))
    assert time.monotonic() - started < 5
    assert "did not finish within bulk_timeout_s (0.3 s) and was aborted" in str(failed.value)
    [job] = sf.jobs.values()
    assert job["state"] == "Aborted" and sf.records == {}
    polls = [p for m, p in bulk_requests(sf) if m == "GET" and p == "ingest/{id}"]
    assert 2 <= len(polls) <= 15  # growing waits, not a busy loop


def test_auto_chooses_bulk_above_the_threshold_per_operation(sf: FakeSalesforce) -> None:
    dest = bulk_dest(sf, api="auto", bulk_threshold=3)
    assert dest.batch_size == 10_000  # bulk_batch_size: what auto sees of a run
    few = [contact(str(i)) for i in range(1, 4)]
    ids = dest.deliver(Batch("s", "r", "upsert", "Contact", few, "External_Id__c")).dest_ids
    assert sf.jobs == {} and sf.count("/composite/sobjects") == 1
    many = [contact(str(i)) for i in range(4, 8)]
    removes = [Record("removed", k, match_value=f"E{k}", dest_id=ids[k]) for k in ids]
    out = dest.deliver(Batch("s", "r", "upsert", "Contact", many + removes, "External_Id__c"))
    assert out.rejected == {}
    assert [j["operation"] for j in sf.jobs.values()] == ["upsert"]  # 3 removals: REST
    assert sf.count("/composite/sobjects", 200) == 2
    assert sorted(by_ext(sf)) == ["E4", "E5", "E6", "E7"]
    base = {"login_url": sf.url, "client_id": "cid", "client_secret": "s3cret"}
    assert build_destination("sf", "salesforce", base).batch_size == 10_000  # auto by default
    assert build_destination("sf", "salesforce", {**base, "api": "rest"}).batch_size == 200


def test_a_batch_over_the_upload_limit_becomes_several_jobs(sf: FakeSalesforce) -> None:
    dest = bulk_dest(sf)
    dest.bulk.max_upload_bytes = 200  # about six rows of this CSV a job
    records = [contact(str(i), Email=f"person{i}@example.com") for i in range(1, 21)]
    out = dest.deliver(Batch("s", "r", "upsert", "Contact", records, "External_Id__c"))
    assert out.rejected == {} and len(out.dest_ids) == 20
    assert len(sf.jobs) >= 4
    assert all(len(j["uploads"][0].encode()) <= 200 for j in sf.jobs.values())
    assert all(
        j["uploads"][0].startswith("LastName,Email,External_Id__c\n") for j in sf.jobs.values()
    )
    assert len(sf.of_type("Contact")) == 20


def test_a_call_failing_mid_batch_keeps_what_was_acknowledged(sf: FakeSalesforce) -> None:
    # sObject Collections calls of 2 in a batch of 5: the login and the first call pass, then
    # Salesforce keeps answering REQUEST_LIMIT_EXCEEDED and the client gives up.
    sf.rate_limit, sf.window_s = 2, 60
    dest = bulk_dest(sf, api="auto", batch_size=2, max_attempts=1)
    records = [contact(str(i)) for i in range(1, 6)]
    with pytest.raises(GaveUp), dest:  # the run fails once its last batch is settled
        out = dest.deliver(Batch("s", "r", "insert", "Contact", records))
        assert set(out.dest_ids) == {"1", "2"} and set(out.rejected) == {"3", "4", "5"}
        assert out.rejected["3"].startswith("not delivered: destination 'sf'")
    assert len(sf.of_type("Contact")) == 2  # nothing is sent twice by the next run


def test_bulk_sync_over_the_threshold_through_dagster(
    sf: FakeSalesforce, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 60)
    sql(warehouse_path, "update people set email = 'broken' where id = 7")
    yaml = dest("bulk_threshold: 25\n    bulk_poll_interval_s: 0.01")
    defs = defs_from_yaml(yaml, sync())
    first = run_sync(defs, "sf_contacts", instance)
    assert first.status == "partial", first.summary  # delivered, but for one rejected row
    assert (first.summary["succeeded"], first.summary["rejected"]) == (59, 1)
    assert [j["operation"] for j in sf.jobs.values()] == ["upsert"]
    assert sf.count("/composite/sobjects") == 0
    errors = dict(
        sql(
            warehouse_path,
            "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
        )
    )
    assert errors == {"7": "INVALID_EMAIL_ADDRESS: Email: invalid email address: broken"}
    sql(warehouse_path, "update people set plan = 'free' where id <= 30")
    sql(warehouse_path, "delete from people where id > 30")
    second = run_sync(defs, "sf_contacts", instance)
    assert second.status == "partial", second.summary  # row 7 is still broken
    assert (second.summary["changed"], second.summary["removed"]) == (29, 30)
    assert [j["operation"] for j in sf.jobs.values()] == ["upsert", "upsert", "delete"]
    assert sf.count("/query") == 0  # deletes used the Ids the first run kept
    left = by_ext(sf)
    assert len(left) == 29 and {r["Plan__c"] for r in left.values()} == {"free"}
