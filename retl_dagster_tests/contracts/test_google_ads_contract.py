"""Every Google Ads request body our client sends parses into the `google-ads` package's own
request protos (unknown fields refused) and keeps to what each service accepts; the validator
itself refuses the shapes our client used to send."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.google_ads import GoogleAdsConfig, GoogleAdsDestination
from retl_dagster_tests.contracts import google_ads as contract
from retl_dagster_tests.fakes.google_ads import FakeGoogleAds

CID, LIST, ACTION = "1234567890", "555", "777"
SECRETS = {"developer_token": "dev", "client_secret": "s3cret", "refresh_token": "1//r"}
CLICK = "Cj0KCQiA0000000000000001"
UPLOAD = f"/v25/customers/{CID}:uploadClickConversions"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fake() -> Iterator[FakeGoogleAds]:
    server = FakeGoogleAds(
        customer_id=CID,
        client_id="cid",
        developer_token=SECRETS["developer_token"],
        client_secret=SECRETS["client_secret"],
        refresh_token=SECRETS["refresh_token"],
    )
    server.conversion_actions.add(ACTION)
    server.clicks.add(CLICK)
    server.known_emails.add(sha("lead@gmail.com"))
    server.user_lists[LIST] = set()
    with server:
        yield server


def destination(fake: FakeGoogleAds) -> GoogleAdsDestination:
    config = GoogleAdsConfig(
        customer_id=CID,
        client_id="cid",
        base_url=fake.url,  # type: ignore[arg-type]
        token_url=fake.url + "/token",  # type: ignore[arg-type]
        conversion_action=ACTION,
        currency_code="EUR",
        ad_user_data_consent="GRANTED",
        ad_personalization_consent="DENIED",
        default_phone_country_code="GB",
        **SECRETS,  # type: ignore[arg-type]
    )
    return GoogleAdsDestination("gads", config)


def post(fake: FakeGoogleAds, path: str, body: dict[str, Any]) -> httpx.Response:
    token = httpx.post(
        fake.url + "/token",
        data={"grant_type": "refresh_token", "client_id": "cid", **SECRETS},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "developer-token": SECRETS["developer_token"]}
    return httpx.post(fake.url + path, json=body, headers=headers)


def test_the_version_checked_is_the_one_our_client_targets() -> None:
    assert contract.api_version() == GoogleAdsConfig.model_fields["api_version"].default


def test_every_body_our_client_sends_parses_into_googles_protos(fake: FakeGoogleAds) -> None:
    now = dt.datetime.now(dt.UTC)
    person = {
        "email": "Lead@GMail.com",
        "phone": "020 7946 0958",
        "conversion_date_time": now.isoformat(),
        "conversion_value": 12.5,
        "order_id": "o-1",
    }
    with destination(fake) as dest:
        dest.prepare("click_conversions", None, {}, None)
        clicks = Batch(
            "s",
            "20260101T000000Z-x",
            "events",
            "click_conversions",
            [
                Record("added", "1", {"gclid": CLICK, "conversion_date_time": now}),
                Record("added", "2", person),
            ],
        )
        assert dest.deliver(clicks).rejected == {}
        dest.prepare(f"customer_match:{LIST}", None, {}, None)
        member = {
            "email": "a@b.co",
            "phone": "+1 650 555 1212",
            "first_name": "Ann",
            "last_name": "O'Neil",
            "country_code": "us",
            "postal_code": "94025",
        }
        audience = Batch(
            "s",
            "20260101T000000Z-x",
            "upsert",
            f"customer_match:{LIST}",
            [Record("added", "1", member)],
        )
        result = dest.deliver(audience)
        assert result.rejected == {}
        removal = Record("removed", "1", dest_id=result.dest_ids["1"])
        assert (
            dest.deliver(Batch("s", "r", "mirror", f"customer_match:{LIST}", [removal])).rejected
            == {}
        )
        dest.match_rate()  # its googleAds:search body is checked too (the list is empty)
    paths = {e.path.rsplit(":", 1)[-1] for e in fake.log if e.path != "/token"}
    assert paths == {"uploadClickConversions", "create", "addOperations", "run", "search"}
    assert fake.contract_failures == [] and len(fake.conversions) == 2
    [lead] = [c for c in fake.conversions if "gclid" not in c]
    assert lead["userIdentifiers"] == [
        {"hashedEmail": sha("lead@gmail.com")},
        {"hashedPhoneNumber": sha("+442079460958")},
    ]


OLD_CLICK: dict[str, Any] = {
    "conversions": [
        {
            "gclid": CLICK,
            "conversionAction": f"customers/{CID}/conversionActions/{ACTION}",
            "conversionDateTime": "2026-01-01 00:00:00+00:00",
            "userIdentifiers": [
                {"hashedEmail": sha("lead@gmail.com")},
                {
                    "addressInfo": {
                        "hashedFirstName": sha("ann"),
                        "hashedLastName": sha("oneil"),
                        "countryCode": "US",
                        "postalCode": "94025",
                    }
                },
            ],
        }
    ],
    "partialFailure": True,
}
"""A click conversion as our client used to build it: an address among its identifiers."""


def test_an_address_on_a_click_conversion_is_refused(fake: FakeGoogleAds) -> None:
    [violation] = contract.violations(UPLOAD, OLD_CLICK)
    assert violation.code == ("conversionUploadError", "UNSUPPORTED_USER_IDENTIFIER")
    assert violation.path == (("conversions", 0), ("user_identifiers", 1))
    # The same body without the address is fine: the rule is about the address only.
    fine = {**OLD_CLICK, "conversions": [{**OLD_CLICK["conversions"][0]}]}
    fine["conversions"][0]["userIdentifiers"] = fine["conversions"][0]["userIdentifiers"][:1]
    assert contract.violations(UPLOAD, fine) == []
    # The fake answers it as Google does: 400 INVALID_ARGUMENT, nothing stored.
    response = post(fake, UPLOAD, OLD_CLICK)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    [failure] = error["details"][0]["errors"]
    assert failure["errorCode"] == {"conversionUploadError": "UNSUPPORTED_USER_IDENTIFIER"}
    assert fake.conversions == [] and len(fake.contract_failures) == 1
    fake.contract_failures.clear()


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (UPLOAD, {"conversions": [{"gclid": CLICK, "hashedEmail": "x"}]}, "no field named"),
        (UPLOAD, {"conversions": [{"consent": {"adUserData": "YES"}}]}, "Invalid enum value"),
        (UPLOAD, {"conversions": [], "partialFailures": True}, "no field named"),
        (
            f"/v25/customers/{CID}/offlineUserDataJobs/1:addOperations",
            {"operations": [{"create": {"userIdentifiers": [{"email": "x"}]}}]},
            "no field named",
        ),
        (
            f"/v25/customers/{CID}/offlineUserDataJobs:create",
            {"job": {"type": "CUSTOMER_MATCH_USER_LIST", "userList": "x"}},
            "no field named",
        ),
    ],
)
def test_unknown_fields_and_values_are_refused(
    fake: FakeGoogleAds, path: str, body: dict[str, Any], words: str
) -> None:
    [violation] = contract.violations(path, body)
    assert violation.code is None and words in violation.message
    response = post(fake, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and words in error["message"]
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fake.contract_failures.clear()


def test_service_rules_beyond_the_proto() -> None:
    six = [{"hashedEmail": sha(f"{i}@x.co")} for i in range(6)]
    body = {"conversions": [{"gclid": CLICK, "userIdentifiers": six}], "partialFailure": True}
    [violation] = contract.violations(UPLOAD, body)
    assert "at most 5" in violation.message
    empty: dict[str, Any] = {"operations": [{"create": {"userIdentifiers": [{}]}}]}
    [violation] = contract.violations(
        f"/v25/customers/{CID}/offlineUserDataJobs/1:addOperations", empty
    )
    assert violation.code == ("offlineUserDataJobError", "MISSING_USER_IDENTIFIER")
    job = {"job": {"type": "CUSTOMER_MATCH_USER_LIST"}}
    [violation] = contract.violations(f"/v25/customers/{CID}/offlineUserDataJobs:create", job)
    assert "user_list" in violation.message
