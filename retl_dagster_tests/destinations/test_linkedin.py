"""LinkedIn Matched Audiences (DMP segment users) and Conversions API, against a fake LinkedIn
that refuses what LinkedIn refuses."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from retl_dagster.components.sync import load_key
from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.linkedin import (
    LinkedInAudienceConfig,
    LinkedInAudienceDestination,
    LinkedInConversionsConfig,
    LinkedInConversionsDestination,
    normalize,
)
from retl_dagster.destinations.impl.linkedin.exceptions import LinkedInApiError, LinkedInAuthError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.linkedin import FakeLinkedIn
from retl_dagster_tests.harness import defs_from_yaml, load_warnings, sql

TOKEN = "AQX-fake-linkedin-access-token"
SEGMENT, RULE, ACCOUNT = "7701", "8801", "500100"
VERSION = "202610"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def now_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-t")


@pytest.fixture
def linkedin(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinkedIn]:
    monkeypatch.setenv("LINKEDIN_TOKEN", TOKEN)
    fake = FakeLinkedIn(TOKEN, segments=(SEGMENT,), rules=(RULE,), account=ACCOUNT)
    with fake:
        monkeypatch.setenv("LINKEDIN_URL", fake.api_url)
        yield fake
    # Every request any test sent matched what LinkedIn's own client sends for the same call.
    assert fake.contract_failures == []


def audience(fake: FakeLinkedIn, **options: Any) -> LinkedInAudienceDestination:
    config = LinkedInAudienceConfig.model_validate(
        {"access_token": TOKEN, "base_url": fake.api_url, "backoff_initial_s": 0.01, **options}
    )
    return LinkedInAudienceDestination("li_audience", config)


def conversions(fake: FakeLinkedIn, **options: Any) -> LinkedInConversionsDestination:
    config = LinkedInConversionsConfig.model_validate(
        {
            "access_token": TOKEN,
            "base_url": fake.api_url,
            "currency_code": "USD",
            "backoff_initial_s": 0.01,
            **options,
        }
    )
    return LinkedInConversionsDestination("li_conversions", config)


# -- the fake refuses what LinkedIn refuses ----------------------------------------------------
def rest(headers: dict[str, str] | None = None, **more: str) -> dict[str, str]:
    base = {
        "Authorization": f"Bearer {TOKEN}",
        "LinkedIn-Version": VERSION,
        "X-Restli-Protocol-Version": "2.0.0",
        "X-RestLi-Method": "BATCH_CREATE",
        "Content-Type": "application/json",
    }
    return {**base, **(headers or {}), **more}


def add(value: str) -> dict[str, Any]:
    return {"action": "ADD", "userIds": [{"idType": "SHA256_EMAIL", "idValue": value}]}


@pytest.mark.parametrize(
    ("headers", "elements", "status", "words"),
    [
        ({"Authorization": "Bearer expired"}, [add(sha("a@x.co"))], 401, "INVALID_ACCESS_TOKEN"),
        ({"LinkedIn-Version": ""}, [add(sha("a@x.co"))], 400, "VERSION_MISSING"),
        ({"LinkedIn-Version": "202301"}, [add(sha("a@x.co"))], 426, "is not active"),
        ({}, [add(sha("a@x.co"))] * 5001, 400, "at most 5000"),
        (
            {},
            [{**add(sha("a@x.co")), "email": "a@x.co"}],
            400,
            "/elements/0/email",
        ),
    ],
)
def test_the_fake_refuses_what_linkedin_refuses(
    linkedin: FakeLinkedIn,
    headers: dict[str, str],
    elements: list[dict[str, Any]],
    status: int,
    words: str,
) -> None:
    sent = rest(headers)
    response = httpx.post(
        f"{linkedin.api_url}/dmpSegments/{SEGMENT}/users",
        json={"elements": elements},
        headers={k: v for k, v in sent.items() if v},
    )
    assert response.status_code == status and words in response.text
    assert linkedin.members[SEGMENT] == set()


def test_an_unhashed_email_and_an_old_conversion_fail_alone(linkedin: FakeLinkedIn) -> None:
    users = httpx.post(
        f"{linkedin.api_url}/dmpSegments/{SEGMENT}/users",
        json={"elements": [add("a@x.co"), add(sha("b@x.co"))]},
        headers=rest(),
    ).json()["elements"]
    assert users[0]["status"] == 400 and "HEX encoded string" in users[0]["error"]["message"]
    assert users[1] == {"status": 201}
    assert linkedin.segment(SEGMENT) == {sha("b@x.co")}
    day = 86_400_000
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    event = {
        "conversion": f"urn:lla:llaPartnerConversion:{RULE}",
        "user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": sha("b@x.co")}]},
    }
    answer = httpx.post(
        f"{linkedin.api_url}/conversionEvents",
        json={
            "elements": [
                {**event, "conversionHappenedAt": now - 91 * day},
                {**event, "conversionHappenedAt": now - 89 * day},
            ]
        },
        headers=rest(),
    ).json()["elements"]
    assert answer[0]["status"] == 400 and "within the past 90 days" in str(answer[0])
    assert answer[1] == {"status": 201} and len(linkedin.events) == 1


# -- normalising and hashing --------------------------------------------------------------------
def test_emails_trimmed_lower_cased_and_hashed() -> None:
    assert normalize.email_hash("  John.Smith@Example.COM ") == sha("john.smith@example.com")
    digest = sha("john.smith@example.com")
    assert normalize.email_hash(digest.upper()) == digest  # a SHA-256 digest passes
    assert normalize.email_hash("") is None and normalize.email_hash(None) is None
    with pytest.raises(ValueError, match="neither an email address nor a SHA-256"):
        normalize.email_hash("john smith")
    assert normalize.country(" us ") == "US"
    with pytest.raises(ValueError, match="not an ISO 3166-1 alpha-2"):
        normalize.country("USA")


# -- Matched Audiences ----------------------------------------------------------------------------
def test_members_added_with_details_and_refused_rows_rejected_alone(
    linkedin: FakeLinkedIn,
) -> None:
    records = [
        Record("added", "1", {"email": " Ann@Example.com ", "first_name": "Ann", "country": "gb"}),
        Record("added", "2", {"email": "not an email", "google_aid": "38400000-8cf0-11bd-b23e"}),
        Record("added", "3", {"email": "nobody", "title": "CTO"}),
        Record("added", "4", {"email": "bo@example.com", "country": "Britain"}),
    ]
    with audience(linkedin) as dest:
        out = dest.deliver(Batch("vip", now_run_id(), "upsert", SEGMENT, records))
    assert out.rejected == {
        "3": "no user id: LinkedIn needs an email or a google_aid to match a member; email is "
        "neither an email address nor a SHA-256 digest, so it was left out"
    }
    assert "neither an email address" in out.warnings["2"]
    assert "'Britain' is not an ISO 3166-1 alpha-2" in out.warnings["4"]
    assert linkedin.segment(SEGMENT) == {sha("ann@example.com"), sha("bo@example.com")}
    assert linkedin.segment(SEGMENT, "GOOGLE_AID") == {"38400000-8cf0-11bd-b23e"}
    assert linkedin.details[("SHA256_EMAIL", sha("ann@example.com"))] == {
        "firstName": "Ann",
        "country": "GB",
    }
    assert out.identified == 3 and set(out.dest_ids) == {"1", "2", "4"}
    assert normalize.loads(out.dest_ids["1"]) == [
        {"idType": "SHA256_EMAIL", "idValue": sha("ann@example.com")}
    ]


def test_an_element_linkedin_refuses_whole_request_is_isolated(linkedin: FakeLinkedIn) -> None:
    # Before version 202502 one refused element failed LinkedIn's whole request: the request is
    # halved until it is alone, so the others still go.
    linkedin.all_or_nothing = True
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=120)).isoformat()
    records = [Record("event", str(i), {"email": f"u{i}@example.com"}) for i in range(16)]
    records[11].fields["conversion_happened_at"] = old
    with conversions(linkedin) as dest:
        out = dest.deliver(Batch("leads", now_run_id(), "events", RULE, records))
    assert list(out.rejected) == ["11"]
    assert "within the past 90 days" in out.rejected["11"]
    assert "/elements/0" in out.rejected["11"] and "VALIDATION_FAILED" in out.rejected["11"]
    assert len(linkedin.events) == 15 and linkedin.count("/conversionEvents", 400) == 5


def test_changed_emails_leave_and_removed_rows_are_removed(linkedin: FakeLinkedIn) -> None:
    first = [Record("added", str(i), {"email": f"p{i}@example.com"}) for i in range(1, 5)]
    with audience(linkedin) as dest:
        out = dest.deliver(Batch("vip", now_run_id(), "mirror", SEGMENT, first))
        ids = out.dest_ids
        second = [
            Record("changed", "1", {"email": "new1@example.com"}, dest_id=ids["1"]),
            Record("removed", "2", {}, dest_id=ids["2"]),
            Record("removed", "9", {}),  # never added by this sync: nothing to remove it by
            # 4 takes 3's old email: it stays in the segment although 3 leaves
            Record("removed", "3", {}, dest_id=ids["3"]),
            Record("changed", "4", {"email": "p3@example.com"}, dest_id=ids["4"]),
        ]
        again = dest.deliver(Batch("vip", now_run_id(), "mirror", SEGMENT, second))
    assert list(again.rejected) == ["9"] and "cannot be removed" in again.rejected["9"]
    assert linkedin.segment(SEGMENT) == {sha("new1@example.com"), sha("p3@example.com")}
    assert normalize.loads(again.dest_ids["4"])[0]["idValue"] == sha("p3@example.com")


def test_more_than_5000_elements_go_in_several_requests(linkedin: FakeLinkedIn) -> None:
    # A changed email is two elements (the old one removed, the new one added).
    old = normalize.dumps([{"idType": "GOOGLE_AID", "idValue": "old"}])
    records = [
        Record("changed", str(i), {"google_aid": f"aid-{i}"}, dest_id=old) for i in range(2600)
    ]
    with audience(linkedin) as dest:
        out = dest.deliver(Batch("vip", now_run_id(), "upsert", SEGMENT, records))
    assert out.rejected == {} and linkedin.sizes == [5000, 200]
    assert len(linkedin.segment(SEGMENT, "GOOGLE_AID")) == 2600


def test_a_refused_token_an_old_version_and_a_missing_segment_stop_delivery(
    linkedin: FakeLinkedIn,
) -> None:
    batch = Batch(
        "vip", now_run_id(), "upsert", SEGMENT, [Record("added", "1", {"email": "a@b.co"})]
    )
    expired = audience(linkedin, access_token="AQX-expired")
    with expired as dest, pytest.raises(LinkedInAuthError, match="the access token") as refused:
        dest.deliver(batch)
    assert "INVALID_ACCESS_TOKEN" in str(refused.value) and "AQX-expired" not in str(refused.value)
    old = audience(linkedin, api_version="202301")
    with old as dest, pytest.raises(LinkedInApiError, match="does not serve version 202301"):
        dest.deliver(batch)
    with audience(linkedin) as dest:
        with pytest.raises(LinkedInApiError, match="no DMP segment 404"):
            dest.deliver(Batch("vip", now_run_id(), "upsert", "404", batch.records))
        assert "DMP segment 7701 ('Fake segment') readable" in dest.check(SEGMENT)
    assert linkedin.members[SEGMENT] == set()


def test_throttling_is_waited_out(linkedin: FakeLinkedIn) -> None:
    linkedin.rate_limit, linkedin.window_s = 1, 0.3
    with audience(linkedin, batch_size=2) as dest:
        for n in range(3):
            records = [Record("added", f"{n}-{i}", {"email": f"t{n}{i}@x.co"}) for i in range(2)]
            assert (
                dest.deliver(Batch("vip", now_run_id(), "upsert", SEGMENT, records)).rejected == {}
            )
    assert linkedin.count("/users", 429) > 0 and len(linkedin.segment(SEGMENT)) == 6


# -- Conversions API ------------------------------------------------------------------------------
def test_conversion_events_as_linkedin_documents_them(linkedin: FakeLinkedIn) -> None:
    happened = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
    records = [
        Record(
            "event",
            "1",
            {
                "email": " Lead@Example.com ",
                "li_fat_id": "df1b2c3d",
                "first_name": "Lea",
                "last_name": "Dubois",
                "company": "Acme",
                "country": "fr",
                "value": 1234.5,
                "currency": "eur",
                "conversion_happened_at": happened.isoformat(),
            },
        ),
        Record("event", "2", {"first_name": "Only", "last_name": "Names", "event_id": "tag-9"}),
        Record("event", "3", {"first_name": "Nobody"}),
        Record("event", "4", {"email": "x@y.co", "value": "lots"}),
    ]
    run = now_run_id()
    with conversions(linkedin, ad_account_id=ACCOUNT) as dest:
        out = dest.deliver(Batch("leads", run, "events", RULE, records))
        assert "conversion rule 8801 ('Fake rule') readable" in dest.check(RULE)
    assert set(out.rejected) == {"3", "4"} and out.identified == 2
    assert "no user id" in out.rejected["3"] and "'lots' is not a number" in out.rejected["4"]
    one, two = linkedin.events
    assert one == {
        "conversion": f"urn:lla:llaPartnerConversion:{RULE}",
        "conversionHappenedAt": int(happened.timestamp() * 1000),
        "eventId": one["eventId"],
        "conversionValue": {"currencyCode": "EUR", "amount": "1234.5"},
        "user": {
            "userIds": [
                {"idType": "SHA256_EMAIL", "idValue": sha("lead@example.com")},
                {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "df1b2c3d"},
            ],
            "userInfo": {
                "firstName": "Lea",
                "lastName": "Dubois",
                "companyName": "Acme",
                "countryCode": "FR",
            },
        },
    }
    assert one["eventId"].startswith("retl-") and two["eventId"] == "tag-9"
    # no time mapped: the run's start, the same on every retry of the run
    started = dt.datetime.strptime(run[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert two["conversionHappenedAt"] == int(started.timestamp() * 1000)


# -- through Dagster ---------------------------------------------------------------------------
DEST = """
destinations:
  linkedin:
    type: linkedin_audience
    access_token: "{{ env.LINKEDIN_TOKEN }}"
    base_url: "{{ env.LINKEDIN_URL }}"
    backoff_initial_s: 0.05
  linkedin_capi:
    type: linkedin_conversions
    access_token: "{{ env.LINKEDIN_TOKEN }}"
    base_url: "{{ env.LINKEDIN_URL }}"
    currency_code: USD
    backoff_initial_s: 0.05
"""

AUDIENCE = f"""
name: li_vips
model: {{table: people}}
primary_key: user_id
destination: linkedin
object: "urn:li:dmpSegment:{SEGMENT}"
mode: mirror
delete_behavior: delete
mappings:
  - {{from: email, to: email}}
  - {{from: first_name, to: first_name}}
  - {{from: company, to: company}}
  - {{from: country, to: country}}
"""

CONVERSIONS = f"""
name: li_leads
model: {{table: leads}}
primary_key: lead_id
destination: linkedin_capi
object: "urn:lla:llaPartnerConversion:{RULE}"
mode: events
mappings:
  - {{from: email, to: email}}
  - {{from: converted_at, to: conversion_happened_at}}
  - {{from: amount, to: value}}
"""


def test_a_segment_mirrors_its_model(
    linkedin: FakeLinkedIn, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    sql(
        warehouse_path,
        """create or replace table people as select i as user_id,
        case when i = 7 then 'n/a' else ' Person' || i || '@Example.com' end as email,
        'Ann' as first_name, 'Acme' as company, case when i = 3 then 'USA' else 'US' end as country
        from range(1, 21) t(i)""",
    )
    defs = defs_from_yaml(DEST, AUDIENCE)
    first = run_sync(defs, "li_vips", instance)
    assert first.status == "partial", first.summary
    assert (first.summary["succeeded"], first.summary["rejected"]) == (19, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "7" and error.startswith("no user id: LinkedIn needs an email or a google_aid")
    assert "'USA' is not an ISO 3166-1 alpha-2 code" in load_warnings(instance, "li_vips")["3"]
    assert linkedin.segment(SEGMENT) == {
        sha(f"person{i}@example.com") for i in range(1, 21) if i != 7
    }
    md = instance.get_latest_materialization_event(
        load_key("li_vips")
    ).asset_materialization.metadata  # type: ignore[union-attr]
    assert md["identified"].value == 19 and "match_rate" not in md

    sql(warehouse_path, "update people set email = 'moved1@example.com' where user_id = 1")
    sql(warehouse_path, "delete from people where user_id > 15")
    second = run_sync(defs, "li_vips", instance)
    s = second.summary
    assert (s["changed"], s["removed"], s["rejected"]) == (1, 5, 1), s  # 7 still refused
    assert linkedin.segment(SEGMENT) == (
        {sha(f"person{i}@example.com") for i in range(2, 16) if i != 7}
        | {sha("moved1@example.com")}
    )


def test_conversions_stream_and_an_old_one_is_rejected_with_linkedins_reason(
    linkedin: FakeLinkedIn, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    sql(
        warehouse_path,
        """create or replace table leads as select i as lead_id,
        'lead' || i || '@example.com' as email,
        case when i = 4 then now() - interval 100 day else now() - to_hours(i) end
            as converted_at,
        (i * 10.5)::decimal(10, 2) as amount
        from range(1, 11) t(i)""",
    )
    defs = defs_from_yaml(DEST, CONVERSIONS)
    first = run_sync(defs, "li_leads", instance)
    assert first.status == "partial", first.summary
    assert (first.summary["succeeded"], first.summary["rejected"]) == (9, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "4" and "conversionHappenedAt must be within the past 90 days" in error
    by_email = {e["user"]["userIds"][0]["idValue"]: e for e in linkedin.events}
    two = by_email[sha("lead2@example.com")]
    [(converted_at,)] = sql(warehouse_path, "select converted_at from leads where lead_id = 2")
    assert two["conversionHappenedAt"] == int(
        converted_at.replace(tzinfo=dt.UTC).timestamp() * 1000
    )
    assert two["conversionValue"] == {"currencyCode": "USD", "amount": "21"}
    # a replay resends the same eventIds: LinkedIn keeps one of each
    replay = run_sync(defs, "li_leads", instance, replay_of=first.summary["run_id"])
    assert replay.summary["succeeded"] == 9 and linkedin.duplicates == 9
    assert len(linkedin.events) == 9


def test_declarations_linkedin_cannot_take() -> None:
    with pytest.raises(Exception, match="'audience-1' is not a DMP segment"):
        defs_from_yaml(DEST, AUDIENCE.replace(f'"urn:li:dmpSegment:{SEGMENT}"', "audience-1"))
    with pytest.raises(Exception, match="takes no field 'firstName'.*map it to first_name"):
        defs_from_yaml(DEST, AUDIENCE.replace("to: first_name", "to: firstName"))
    with pytest.raises(Exception, match="LinkedIn matches members by a user id"):
        defs_from_yaml(DEST, AUDIENCE.replace("to: email", "to: title"))
    with pytest.raises(Exception, match="does not support mode 'events'"):
        defs_from_yaml(DEST, CONVERSIONS.replace("linkedin_capi", "linkedin"))
    with pytest.raises(Exception, match="a conversion value needs its currency"):
        defs_from_yaml(DEST.replace("    currency_code: USD\n", ""), CONVERSIONS)
    with pytest.raises(Exception, match="takes no field 'event_time'.*conversion_happened_at"):
        defs_from_yaml(DEST, CONVERSIONS.replace("to: conversion_happened_at", "to: event_time"))
