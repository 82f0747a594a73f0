"""LinkedIn contract: each request our clients send is the one LinkedIn's official Python client
(`linkedin-api-client`'s RestliClient) prepares for the same Rest.li call, and the comparison
refuses the requests it would not send."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.linkedin import (
    LinkedInAudienceConfig,
    LinkedInAudienceDestination,
    LinkedInConversionsConfig,
    LinkedInConversionsDestination,
)
from retl_dagster_tests.contracts import linkedin as contract
from retl_dagster_tests.fakes.linkedin import FakeLinkedIn

TOKEN, SEGMENT, RULE, ACCOUNT = "AQX-contract", "4242", "5151", "600200"
VERSION = "202610"


@pytest.fixture
def fake() -> Iterator[FakeLinkedIn]:
    with FakeLinkedIn(TOKEN, segments=(SEGMENT,), rules=(RULE,), account=ACCOUNT) as server:
        yield server  # type: ignore[misc]


def test_every_request_our_clients_send_is_the_clients_request(fake: FakeLinkedIn) -> None:
    run = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-c")
    common: dict[str, Any] = {"access_token": TOKEN, "base_url": fake.api_url}
    audience = LinkedInAudienceConfig.model_validate(common)
    with LinkedInAudienceDestination("li_a", audience) as dest:
        dest.check(SEGMENT)
        out = dest.deliver(
            Batch(
                "c",
                run,
                "mirror",
                SEGMENT,
                [
                    Record("added", "1", {"email": "a@x.co", "first_name": "A", "country": "us"}),
                    Record("added", "2", {"google_aid": "aid-2", "title": "CFO"}),
                ],
            )
        )
        dest.deliver(
            Batch(
                "c", run, "mirror", SEGMENT, [Record("removed", "1", {}, dest_id=out.dest_ids["1"])]
            )
        )
    conversions = LinkedInConversionsConfig.model_validate(
        {**common, "currency_code": "EUR", "ad_account_id": ACCOUNT}
    )
    with LinkedInConversionsDestination("li_c", conversions) as dest:
        dest.check(RULE)
        fields = {"email": "a@x.co", "li_fat_id": "u-1", "last_name": "B", "value": 9.5}
        dest.deliver(Batch("c", run, "events", RULE, [Record("event", "1", fields)]))
    assert fake.contract_failures == []
    assert [(e.method, e.path, e.status) for e in fake.log] == [
        ("GET", f"/rest/dmpSegments/{SEGMENT}", 200),
        ("POST", f"/rest/dmpSegments/{SEGMENT}/users", 200),
        ("POST", f"/rest/dmpSegments/{SEGMENT}/users", 200),
        ("GET", f"/rest/conversions/{RULE}", 200),
        ("POST", "/rest/conversionEvents", 200),
    ]
    assert fake.segment(SEGMENT) == set() and len(fake.events) == 1


HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "LinkedIn-Version": VERSION,
    "X-RestLi-Protocol-Version": "2.0.0",
    "X-RestLi-Method": "BATCH_CREATE",
    "Content-Type": "application/json",
}
BODY = {"elements": [{"action": "ADD", "userIds": [{"idType": "GOOGLE_AID", "idValue": "x"}]}]}
USERS = f"/rest/dmpSegments/{SEGMENT}/users"


def test_the_clients_own_request_passes() -> None:
    prepared = contract.sdk_request(
        "POST",
        "/dmpSegments/{id}/users",
        {"id": int(SEGMENT)},
        token=TOKEN,
        version=VERSION,
        body=BODY,
    )
    assert prepared.url == f"https://api.linkedin.com{USERS}"
    assert isinstance(prepared.body, bytes)
    headers = {k: str(v) for k, v in prepared.headers.items()}
    assert contract.problems("POST", USERS, "", headers, json.loads(prepared.body)) == []
    assert contract.problems("POST", USERS, "", HEADERS, BODY) == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "words"),
    [
        (
            "POST",
            USERS,
            {"X-RestLi-Method": ""},
            BODY,
            "X-RestLi-Method: '', the client's 'BATCH_CREATE'",
        ),
        ("POST", USERS, {"X-RestLi-Method": "CREATE"}, BODY, "the client's 'BATCH_CREATE'"),
        ("POST", USERS, {"Authorization": TOKEN}, BODY, "not `Bearer <access token>`"),
        ("POST", USERS, {"Content-Type": "text/plain"}, BODY, "Content-Type"),
        ("POST", USERS, {}, {**BODY, "partial": True}, "the client's 'CREATE'"),
        ("POST", f"/v2/dmpSegments/{SEGMENT}/users", {}, BODY, "not a call this contract knows"),
    ],
)
def test_what_the_client_would_not_send_is_refused(
    fake: FakeLinkedIn, method: str, path: str, headers: dict[str, str], body: Any, words: str
) -> None:
    sent = {**HEADERS, **headers}
    found = contract.problems(method, path, "", sent, body)
    assert any(words in p for p in found), found
    assert TOKEN not in " ".join(found)  # the token is never shown
    if path.startswith("/rest/") and "Authorization" not in headers:
        # the fake answers 400 and keeps nothing
        response = httpx.post(
            f"{fake.url}{path}", json=body, headers={k: v for k, v in sent.items() if v}
        )
        assert response.status_code == 400 and len(fake.contract_failures) == 1
        assert fake.members[SEGMENT] == set()
