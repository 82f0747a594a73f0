"""Salesforce publishes no SDK model of its REST bodies, so the fake holds the sObject
Collections reference's rules; this shows they refuse what Salesforce refuses."""

from __future__ import annotations

import httpx

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
