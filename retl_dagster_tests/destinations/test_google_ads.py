"""Google Ads: offline click conversions and a Customer Match list, through Dagster, against a
fake Google Ads API and OAuth2 token endpoint."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.cli import _histories, _summary_line
from retl_dagster.components.sync import load_key
from retl_dagster.destinations import phones
from retl_dagster.destinations.impl.google_ads import normalize
from retl_dagster.destinations.impl.google_ads.client import conversion_date_time
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.google_ads import FakeGoogleAds
from retl_dagster_tests.harness import defs_from_yaml, load_warnings, sql

CID, MANAGER, LIST, ACTION = "1234567890", "9876543210", "555", "777"
DEV_TOKEN, CLIENT_ID, SECRET, REFRESH = "dev-token", "cid.apps.example", "s3cret", "1//refresh"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def gclid(i: int) -> str:
    return f"Cj0KCQiA{i:016d}"


@pytest.fixture
def gads(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGoogleAds]:
    monkeypatch.setenv("GADS_DEV_TOKEN", DEV_TOKEN)
    monkeypatch.setenv("GADS_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("GADS_REFRESH_TOKEN", REFRESH)
    fake = FakeGoogleAds(
        customer_id=CID,
        developer_token=DEV_TOKEN,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        refresh_token=REFRESH,
        manager_id=MANAGER,
    )
    fake.conversion_actions.add(ACTION)
    fake.user_lists[LIST] = set()
    with fake:
        monkeypatch.setenv("GADS_URL", fake.url)
        monkeypatch.setenv("GADS_TOKEN_URL", fake.url + "/token")
        yield fake
    # Every body any test sent parsed into Google's own request protos and kept to what the
    # service accepts (contracts/google_ads.py).
    assert fake.contract_failures == []


DEST = f"""
destinations:
  gads:
    type: google_ads
    customer_id: "123-456-7890"
    login_customer_id: "987-654-3210"
    developer_token: "{{{{ env.GADS_DEV_TOKEN }}}}"
    client_id: {CLIENT_ID}
    client_secret: "{{{{ env.GADS_CLIENT_SECRET }}}}"
    refresh_token: "{{{{ env.GADS_REFRESH_TOKEN }}}}"
    base_url: "{{{{ env.GADS_URL }}}}"
    token_url: "{{{{ env.GADS_TOKEN_URL }}}}"
    conversion_action: "{ACTION}"
    currency_code: USD
    default_phone_country_code: "1"
    backoff_initial_s: 0.05
    backoff_max_s: 2
"""

CONVERSIONS = """
name: offline_conversions
model: {table: conversions}
primary_key: conversion_id
destination: gads
object: click_conversions
mode: events
mappings:
  - {from: gclid, to: gclid}
  - {from: email, to: email}
  - {from: converted_at, to: conversion_date_time}
  - {from: amount, to: conversion_value}
"""

AUDIENCE = f"""
name: vip_audience
model: {{table: audience}}
primary_key: user_id
destination: gads
object: "customer_match:{LIST}"
mode: mirror
delete_behavior: delete
mappings:
  - {{from: email, to: email}}
  - {{from: phone, to: phone}}
  - {{from: first_name, to: first_name}}
  - {{from: last_name, to: last_name}}
  - {{from: country, to: country_code}}
  - {{from: zip, to: postal_code}}
"""


def conversions(path: Path, first: int, last: int, fake: FakeGoogleAds, replace: bool = True):
    """Every fourth conversion is a lead known by email only (enhanced conversions for leads);
    the others come from a click the fake served."""
    head = "create or replace table conversions as" if replace else "insert into conversions"
    sql(
        path,
        f"""{head} select i as conversion_id,
        case when i % 4 = 0 then null else 'Cj0KCQiA' || lpad(i::varchar, 16, '0') end
            as gclid,
        case when i % 4 = 0 then ' Lead.' || i || '@GMail.com' end as email,
        now() - to_hours(i) as converted_at, (i * 2.5)::decimal(10, 2) as amount
        from range({first}, {last + 1}) t(i)""",
    )
    for i in range(first, last + 1):
        if i % 4:
            fake.clicks.add(gclid(i))
        else:
            fake.known_emails.add(sha(f"lead{i}@gmail.com"))


def audience(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table audience as select i as user_id,
        'Person.' || i || '@gmail.com' as email,
        '+1 (650) 555-' || lpad(i::varchar, 4, '0') as phone,
        'Ann' as first_name, 'O''Neil' as last_name, 'US' as country, '94025' as zip
        from range(1, {n + 1}) t(i)""",
    )


def load_metadata(instance: dg.DagsterInstance, sync: str) -> dict:
    event = instance.get_latest_materialization_event(load_key(sync))
    assert event and event.asset_materialization
    return dict(event.asset_materialization.metadata)


def test_identifiers_normalised_and_hashed_as_google_documents() -> None:
    # Google documents the normalisation (trim, lower-case, no dots before @gmail.com or
    # @googlemail.com, E.164 phones) but publishes no digests: the expected values are
    # hashlib's SHA-256 of the documented normalised strings.
    assert normalize.email(" Jane.Doe@GMail.com ") == "janedoe@gmail.com"
    assert normalize.email("jane.doe@googlemail.com") == "janedoe@googlemail.com"
    assert normalize.email("Jane.Doe@Example.com") == "jane.doe@example.com"
    assert normalize.phone("+1 (650) 555-1212") == "+16505551212"
    assert normalize.phone("0044 20 7031 3000") == "+442070313000"
    assert normalize.phone("(650) 555-1212", "1") == "+16505551212"
    assert normalize.phone("(650) 555-1212", "US") == "+16505551212"
    assert normalize.phone("+44 (0)20 7946 0958") == "+442079460958"  # no trunk 0
    assert normalize.phone("020 7946 0958", "GB") == "+442079460958"
    with pytest.raises(phones.PhoneError, match="no country code"):
        normalize.phone("(650) 555-1212")  # not +6505551212
    assert normalize.last_name(" O'Neil ") == "oneil"
    assert normalize.first_name("  Mary   Ann ") == "mary ann"
    ids = normalize.identifiers(
        {
            "email": " Jane.Doe@GMail.com ",
            "phone": "+1 (650) 555-1212",
            "first_name": "Jane",
            "last_name": "O'Neil",
            "country_code": "us",
            "postal_code": "94025",
        }
    )
    assert ids == [
        {"hashedEmail": sha("janedoe@gmail.com")},
        {"hashedPhoneNumber": sha("+16505551212")},
        {
            "addressInfo": {
                "hashedFirstName": sha("jane"),
                "hashedLastName": sha("oneil"),
                "countryCode": "US",  # not hashed
                "postalCode": "94025",  # not hashed
            }
        },
    ]
    prehashed = sha("janedoe@gmail.com")
    assert normalize.identifiers({"email": prehashed.upper()}) == [{"hashedEmail": prehashed}]
    # an address needs all four parts
    assert normalize.identifiers({"first_name": "Jane", "last_name": "Doe"}) == []
    # click conversions take no address; a phone that cannot be told is left out, with why
    notes: list[str] = []
    person = {"email": "a@b.co", "phone": "555 1212", "first_name": "A", "last_name": "B"}
    person |= {"country_code": "US", "postal_code": "94025"}
    assert normalize.identifiers(person, None, notes, address=False) == [
        {"hashedEmail": sha("a@b.co")}
    ]
    assert len(notes) == 1 and "no country code" in notes[0]
    assert (
        conversion_date_time("2026-01-02T03:04:05", "America/New_York")
        == "2026-01-02 03:04:05-05:00"
    )
    assert conversion_date_time("2026-07-02T03:04:05+02:00", "UTC") == "2026-07-02 03:04:05+02:00"
    # epoch seconds are an instant (UTC); a date is midnight in the account's zone
    assert conversion_date_time(1_767_225_600, "Europe/Paris") == "2026-01-01 00:00:00+00:00"
    assert conversion_date_time(dt.date(2026, 1, 2), "Europe/Paris") == (
        "2026-01-02 00:00:00+01:00"
    )


def test_click_conversions_with_partial_failure_and_a_token_refresh(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    conversions(warehouse_path, 1, 40, gads)
    sql(warehouse_path, "update conversions set gclid = 'not a gclid' where conversion_id = 6")
    sql(
        warehouse_path,
        "update conversions set email = 'nobody@example.com' where conversion_id = 8",
    )
    gads.max_token_uses = 1  # each access token dies after one call: refreshed on the 401
    dest = DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 10")
    defs = defs_from_yaml(dest, CONVERSIONS)
    out = run_sync(defs, "offline_conversions", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (38, 2)
    assert gads.token_requests >= 4  # 4 uploads, each on a fresh token after a 401
    rejected = dict(
        sql(
            warehouse_path,
            "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
        )
    )
    assert rejected["6"] == (
        "conversionUploadError.UNPARSEABLE_GCLID: The imported gclid could not be decoded."
    )
    assert rejected["8"].startswith(
        "conversionUploadError.CLICK_NOT_FOUND: The email address or phone number for this "
        "event can't be matched to a click."
    )
    assert len(gads.conversions) == 38 and gads.duplicates == 0
    by_click = {c.get("gclid"): c for c in gads.conversions}
    five = by_click[gclid(5)]
    [(converted_at,)] = sql(
        warehouse_path, "select converted_at from conversions where conversion_id = 5"
    )
    assert five["conversionAction"] == f"customers/{CID}/conversionActions/{ACTION}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d", five["conversionDateTime"])
    sent = dt.datetime.strptime(five["conversionDateTime"], "%Y-%m-%d %H:%M:%S%z")
    assert sent == converted_at.replace(microsecond=0)
    assert five["conversionValue"] == 12.5 and five["currencyCode"] == "USD"
    assert five["orderId"].startswith("retl-") and "userIdentifiers" not in five
    lead = next(c for c in gads.conversions if "gclid" not in c and c["conversionValue"] == 30)
    assert lead["userIdentifiers"] == [{"hashedEmail": sha("lead12@gmail.com")}]
    assert len({c["orderId"] for c in gads.conversions}) == 38

    md = load_metadata(instance, "offline_conversions")
    assert md["identified"].value == 38 and "match_rate" not in md
    assert sql(
        warehouse_path,
        "select identified, matched, match_rate from _retl.sync_runs "
        f"where run_id = '{out.summary['run_id']}'",
    ) == [(38, None, None)]

    # The two rejected rows are retried (still refused); new conversions go out once.
    conversions(warehouse_path, 41, 44, gads, replace=False)
    second = run_sync(defs, "offline_conversions", instance)
    assert (second.summary["succeeded"], second.summary["rejected"]) == (4, 2)
    assert len(gads.conversions) == 42 and gads.duplicates == 0


def test_quota_exhaustion_is_waited_out_nothing_lost_or_doubled(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    gads.rate_limit, gads.window_s = 3, 1.0
    conversions(warehouse_path, 1, 30, gads)
    dest = DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 5")
    defs = defs_from_yaml(dest, CONVERSIONS)
    out = run_sync(defs, "offline_conversions", instance)
    assert out.status == "succeeded", out.summary
    assert gads.count(":uploadClickConversions", 429) > 0
    assert len(gads.conversions) == 30 and gads.duplicates == 0
    # Resending the same conversions (a replay) doubles nothing: Google answers
    # CLICK_CONVERSION_ALREADY_EXISTS, which counts as delivered.
    replay = run_sync(defs, "offline_conversions", instance, replay_of=out.summary["run_id"])
    assert (replay.status, replay.summary["succeeded"]) == ("succeeded", 30)
    assert len(gads.conversions) == 30 and gads.duplicates == 30


def test_customer_match_members_changes_removals_and_match_rate(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    audience(warehouse_path, 30)
    sql(warehouse_path, "update audience set country = 'USA' where user_id = 13")
    gads.known_emails |= {sha(f"person{i}@gmail.com") for i in range(1, 21)}
    defs = defs_from_yaml(DEST, AUDIENCE)
    first = run_sync(defs, "vip_audience", instance)
    assert first.status == "partial"
    assert (first.summary["succeeded"], first.summary["rejected"]) == (29, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert (key, error) == (
        "13",
        "offlineUserDataJobError.INVALID_COUNTRY_CODE: The country code is invalid.",
    )
    emails = {sha(f"person{i}@gmail.com") for i in range(1, 31) if i != 13}
    assert gads.members(LIST) == emails
    assert sha("+16505550007") in gads.members(LIST, "hashedPhoneNumber")
    [address] = {a for a in gads.members(LIST, "addressInfo")}
    assert sha("oneil") in address and '"countryCode": "US"' in address
    assert len(gads.jobs) == 1 and gads.operation_counts() == {"create": 29}
    # 19 of the 29 emails are people the fake knows: Google's own rate, 66%.
    md = load_metadata(instance, "vip_audience")
    assert md["identified"].value == 29 and md["match_rate"].value == 0.66
    assert sql(
        warehouse_path,
        "select identified, matched, match_rate from _retl.sync_runs "
        f"where run_id = '{first.summary['run_id']}'",
    ) == [(29, None, 0.66)]

    # Two people change email, five leave the audience, 13 gets a valid country.
    sql(
        warehouse_path,
        "update audience set email = 'new' || user_id || '@example.com' where user_id <= 2",
    )
    sql(warehouse_path, "update audience set country = 'US' where user_id = 13")
    sql(warehouse_path, "delete from audience where user_id > 25")
    second = run_sync(defs, "vip_audience", instance)
    s = second.summary
    assert (s["changed"], s["removed"], s["succeeded"], s["rejected"]) == (2, 5, 8, 0)
    assert gads.members(LIST) == (
        {sha(f"person{i}@gmail.com") for i in range(3, 26)}
        | {sha("new1@example.com"), sha("new2@example.com")}
    )
    phones = gads.members(LIST, "hashedPhoneNumber")
    assert sha("+16505550001") in phones and sha("+16505550030") not in phones
    # one remove job (5 members, 2 old emails) and one create job (2 changed, 13 retried)
    assert gads.operation_counts() == {"create": 29 + 3, "remove": 5 + 2}
    assert load_metadata(instance, "vip_audience")["match_rate"].value == 0.72  # 18 of 25


def test_customer_match_survives_quota_and_reports_a_missing_rate(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    gads.rate_limit, gads.window_s = 4, 1.0
    gads.match_rate_ready = False  # Google has not computed the list's rate yet
    audience(warehouse_path, 30)
    dest = DEST.replace("backoff_max_s: 2", "backoff_max_s: 2\n    batch_size: 10")
    out = run_sync(defs_from_yaml(dest, AUDIENCE), "vip_audience", instance)
    assert out.status == "succeeded", out.summary
    assert sum(1 for e in gads.log if e.status == 429) > 0
    assert len(gads.jobs) == 3 and gads.operation_counts() == {"create": 30}
    assert len(gads.members(LIST)) == 30
    md = load_metadata(instance, "vip_audience")
    assert md["identified"].value == 30 and "match_rate" not in md


def test_retl_runs_summary_line_shows_the_lists_match_rate(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    audience(warehouse_path, 4)
    gads.known_emails.add(sha("person1@gmail.com"))
    assert run_sync(defs_from_yaml(DEST, AUDIENCE), "vip_audience", instance).status == (
        "succeeded"
    )
    [line] = [_summary_line(s) for s in _histories(["vip_audience"], 5)["vip_audience"]]
    assert "4 identified, match rate 25.0%" in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("developer_token", "The developer token is not valid"),
        ("login_customer_id", "the manager's customer id must be set in the 'login-customer-id'"),
        ("refresh_token", "Google refused the OAuth refresh token (invalid_grant"),
    ],
)
def test_refused_credentials_fail_the_run_and_mark_nothing_synced(
    change: str,
    message: str,
    gads: FakeGoogleAds,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = DEST
    if change == "login_customer_id":
        dest = DEST.replace('    login_customer_id: "987-654-3210"\n', "")
    else:
        variable = {"developer_token": "GADS_DEV_TOKEN", "refresh_token": "GADS_REFRESH_TOKEN"}
        monkeypatch.setenv(variable[change], "wrong")
    audience(warehouse_path, 5)
    out = run_sync(defs_from_yaml(dest, AUDIENCE), "vip_audience", instance)
    assert out.status == "failed" and message in out.summary["error"]
    assert sql(
        warehouse_path,
        "select count(*) from _retl.sync_record_results where status = 'succeeded'",
    ) == [(0,)]
    assert gads.members(LIST) == set()


def test_declarations_google_ads_cannot_take() -> None:
    with pytest.raises(Exception, match="google_ads has no object 'audiences'"):
        defs_from_yaml(DEST, AUDIENCE.replace(f"customer_match:{LIST}", "audiences"))
    with pytest.raises(Exception, match="customer_match:555 takes mode upsert or mirror"):
        defs_from_yaml(
            DEST, AUDIENCE.replace("mode: mirror", "mode: events").replace(": delete", ": nothing")
        )
    with pytest.raises(Exception, match="map a timestamp column to conversion_date_time"):
        defs_from_yaml(DEST, CONVERSIONS.replace("to: conversion_date_time", "to: order_id"))
    with pytest.raises(
        Exception, match=r"click conversions take no address identifiers \(first_name\)"
    ):
        defs_from_yaml(DEST, CONVERSIONS + "  - {from: amount, to: first_name}\n")
    with pytest.raises(Exception, match="map email or phone instead"):
        defs_from_yaml(DEST, CONVERSIONS + "  - {from: amount, to: postal_code}\n")
    with pytest.raises(Exception, match="'zip' is not a property of google_ads"):
        defs_from_yaml(DEST, AUDIENCE.replace("to: postal_code", "to: zip"))
    with pytest.raises(Exception, match="field 'delete_behavior'"):
        defs_from_yaml(
            DEST,
            AUDIENCE.replace("mode: mirror", "mode: upsert").replace(": delete", ": clear"),
        )


def test_enhanced_conversion_phones_in_e164(
    gads: FakeGoogleAds, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    conversions(warehouse_path, 1, 8, gads)
    sql(warehouse_path, "alter table conversions add column phone varchar")
    sql(warehouse_path, "update conversions set phone = '(650) 555-1212' where conversion_id = 4")
    sql(
        warehouse_path,
        "update conversions set phone = '+44 (0)20 7946 0958' where conversion_id = 8",
    )
    sync = CONVERSIONS + "  - {from: phone, to: phone}\n"
    out = run_sync(defs_from_yaml(DEST, sync), "offline_conversions", instance)
    assert out.status == "succeeded", out.summary
    leads = {
        c["conversionValue"]: c["userIdentifiers"] for c in gads.conversions if "gclid" not in c
    }
    # default_phone_country_code 1: (650) 555-1212 hashes as +16505551212
    assert leads[10] == [
        {"hashedEmail": sha("lead4@gmail.com")},
        {"hashedPhoneNumber": sha("+16505551212")},
    ]
    assert leads[20][1] == {"hashedPhoneNumber": sha("+442079460958")}
    assert not any(
        "addressInfo" in i for c in gads.conversions for i in c.get("userIdentifiers", [])
    )


def test_a_phone_without_a_country_code_is_left_out_with_a_reason(
    gads: FakeGoogleAds,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    audience(warehouse_path, 4)
    sql(warehouse_path, "update audience set phone = '(650) 555-1212'")
    sql(warehouse_path, "update audience set phone = '+44 (0)20 7946 0958' where user_id = 2")
    sql(warehouse_path, "update audience set email = null, first_name = null where user_id = 3")
    dest = DEST.replace('    default_phone_country_code: "1"\n', "")
    out = run_sync(defs_from_yaml(dest, AUDIENCE), "vip_audience", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (3, 1)
    # 3 had only the phone: no identifier left, rejected with the phone's reason
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "3" and error.startswith("no user identifier") and "no country code" in error
    # the others went with their email (and address), without the phone; +44 kept its own
    assert gads.members(LIST) == {sha(f"person{i}@gmail.com") for i in (1, 2, 4)}
    assert gads.members(LIST, "hashedPhoneNumber") == {sha("+442079460958")}
    # the load says which records went without their phone, and why (UI metadata)
    warned = load_warnings(instance, "vip_audience")
    assert set(warned) == {"1", "4"} and "default_phone_country_code" in warned["1"]
