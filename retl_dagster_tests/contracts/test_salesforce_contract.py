"""Salesforce publishes no SDK model of its REST or Bulk API 2.0 bodies (nor any Python SDK: on
PyPI, simple-salesforce, salesforce-bulk, aiosalesforce and others are third parties' clients),
so the fake holds the sObject Collections and Bulk API 2.0 references' rules; this shows they
refuse what Salesforce refuses, and that a third-party Bulk API 2.0 client used against real orgs
(simple-salesforce) converses with the fake as ours does."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.salesforce import SalesforceConfig, SalesforceDestination
from retl_dagster_tests.fakes.salesforce import FakeSalesforce


def test_the_fake_refuses_bodies_salesforce_cannot_read() -> None:
    with FakeSalesforce("cid", "secret") as sf:
        token = httpx.post(
            f"{sf.url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "cid",
                "client_secret": "secret",
            },
        ).json()["access_token"]
        url = f"{sf.url}/services/data/v62.0/composite/sobjects"
        headers = {"Authorization": f"Bearer {token}"}
        record = {"attributes": {"type": "Contact"}, "LastName": "Doe"}
        for body, words in [
            ({"allOrNone": False, "records": [record], "extra": 1}, "Unrecognized field"),
            ({"allOrNone": "no", "records": [record]}, "allOrNone must be a boolean"),
            ({"records": [{"LastName": "Doe"}]}, "needs its attributes"),
            ({"records": [{**record, "Address__c": {"city": "X"}}]}, "a value must be a"),
        ]:
            answer = httpx.post(url, json=body, headers=headers)
            assert answer.status_code == 400
            assert answer.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
            assert words in answer.json()[0]["message"]
        ok = httpx.post(url, json={"allOrNone": False, "records": [record]}, headers=headers)
        assert ok.status_code == 200 and ok.json()[0]["success"]


# -- Bulk API 2.0 ingest ----------------------------------------------------------------------
def _token(sf: FakeSalesforce) -> str:
    answer = httpx.post(
        f"{sf.url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "cid", "client_secret": "secret"},
    )
    return str(answer.json()["access_token"])


def test_the_fake_holds_ingest_jobs_to_the_reference() -> None:
    """The job's state machine and the bodies Bulk API 2.0 refuses, with its error shape
    (`[{"errorCode", "message"}]`)."""
    with (
        FakeSalesforce("cid", "secret") as sf,
        httpx.Client(
            base_url=f"{sf.url}/services/data/v62.0/jobs",
            headers={"Authorization": f"Bearer {_token(sf)}"},
        ) as http,
    ):
        csv_type = {"Content-Type": "text/csv"}
        spec = {"object": "Contact", "operation": "insert", "contentType": "CSV"}

        def refused(answer: httpx.Response, code: str, words: str) -> None:
            assert answer.status_code == 400, answer.text
            [error] = answer.json()
            assert error["errorCode"] == code and words in error["message"], error

        def upload(job: str, data: bytes) -> httpx.Response:
            return http.put(f"/ingest/{job}/batches", content=data, headers=csv_type)

        def close(job: str) -> httpx.Response:
            return http.patch(f"/ingest/{job}", json={"state": "UploadComplete"})

        refused(
            http.post("/ingest", json={**spec, "batchSize": 10}), "JSON_PARSER_ERROR", "batchSize"
        )
        refused(
            http.post("/ingest", json={**spec, "operation": "merge"}), "JSON_PARSER_ERROR", "merge"
        )
        refused(
            http.post("/ingest", json={**spec, "operation": "upsert"}), "INVALIDJOB", "External ID"
        )
        created = http.post("/ingest", json=spec).json()
        job = created["id"]
        assert (created["state"], created["contentUrl"]) == (
            "Open",
            f"services/data/v62.0/jobs/ingest/{job}/batches",
        )
        refused(http.get(f"/ingest/{job}/successfulResults/"), "INVALIDJOBSTATE", "no results yet")
        json_type = {"Content-Type": "application/json"}
        wrong_type = http.put(f"/ingest/{job}/batches", content=b"LastName\nA\n", headers=json_type)
        refused(wrong_type, "INVALIDCONTENTTYPE", "text/csv")
        assert upload(job, b"LastName\nA\n").status_code == 201
        assert upload(job, b"LastName\nB\n").status_code == 201
        refused(close(job), "INVALIDJOB", "only do 'PUT' once")
        # One upload: the job closes, takes no more data, and its results wait for its end.
        one = http.post("/ingest", json=spec).json()["id"]
        upload(one, b"LastName\nA\n")
        closed = close(one).json()
        assert closed["state"] == "UploadComplete" and "contentUrl" not in closed
        refused(upload(one, b"LastName\nC\n"), "INVALIDJOBSTATE", "not Open")
        assert http.get(f"/ingest/{one}").json()["state"] == "JobComplete"
        aborted = http.patch(f"/ingest/{one}", json={"state": "Aborted"})
        refused(aborted, "INVALIDJOBSTATE", "Aborting already Completed Job not allowed")
        ok = http.get(f"/ingest/{one}/successfulResults/")
        assert ok.headers["content-type"].startswith("text/csv")
        assert ok.text.splitlines()[0] == '"sf__Id","sf__Created","LastName"'
        # A CRLF upload to an LF job, or an unknown column, fail the whole job.
        for data, message in [
            (b"LastName\r\nA\r\n", "ClientInputError : LineEnding is invalid on user data"),
            (b"LastName,Tier__c\nA,gold\n", "InvalidBatch : Field name not found : Tier__c"),
        ]:
            bad = http.post("/ingest", json=spec).json()["id"]
            upload(bad, data)
            close(bad)
            info = http.get(f"/ingest/{bad}").json()
            assert (info["state"], info["numberRecordsProcessed"]) == ("Failed", 0)
            assert info["errorMessage"].startswith(message)
        assert len(sf.contract_failures) == 7  # all but the abort: what our client never sends


def test_a_third_party_bulk2_client_and_ours_speak_alike_to_the_fake() -> None:
    """simple-salesforce's Bulk API 2.0 client (a third party's, not Salesforce's: Salesforce
    publishes no Python SDK), used against real orgs, runs its upsert against the fake, and our
    client sends the same job definition for the same upsert."""
    bulk2 = pytest.importorskip("simple_salesforce.bulk2")
    import requests

    with FakeSalesforce("cid", "secret") as sf:
        handler = bulk2.SFBulk2Handler(
            _token(sf), f"{sf.url}/services/data/v62.0/jobs/", session=requests.Session()
        )
        rows = [
            {"LastName": "Doe", "Email": "doe@example.com", "External_Id__c": "E1"},
            {"LastName": "Roe", "Email": "not-an-email", "External_Id__c": "E2"},
        ]
        [summary] = handler.Contact.upsert(records=rows, external_id_field="External_Id__c", wait=0)
        assert (summary["numberRecordsProcessed"], summary["numberRecordsFailed"]) == (2, 1)
        failed = list(
            csv.DictReader(io.StringIO(handler.Contact.get_failed_records(summary["job_id"])))
        )
        assert [(r["External_Id__c"], r["sf__Error"]) for r in failed] == [
            ("E2", "INVALID_EMAIL_ADDRESS:Email: invalid email address: not-an-email:Email --")
        ]
        theirs = [e.body for e in sf.log if e.method == "POST" and e.path.endswith("/jobs/ingest")]

        config = SalesforceConfig.model_validate(
            {
                "login_url": sf.url,
                "client_id": "cid",
                "client_secret": "secret",
                "api": "bulk",
                "bulk_poll_interval_s": 0.01,
            }
        )
        records = [
            Record("added", r["External_Id__c"], dict(r), match_value=r["External_Id__c"])
            for r in rows
        ]
        with SalesforceDestination("sf", config) as dest:
            out = dest.deliver(Batch("s", "r", "upsert", "Contact", records, "External_Id__c"))
        assert out.rejected == {
            "E2": "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email"
        }
        created = [e.body for e in sf.log if e.method == "POST" and e.path.endswith("/ingest")]
        assert created == theirs * 2  # theirs, then ours
        assert sf.contract_failures == []
