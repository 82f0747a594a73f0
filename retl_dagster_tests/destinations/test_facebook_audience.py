"""Meta Custom Audiences (customer lists): members added and removed in upload sessions, against
a fake Marketing API; most cases through the client, one mirror sync through Dagster."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from retl_dagster.components.sync import load_key
from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.facebook import normalize
from retl_dagster.destinations.impl.facebook.audience import (
    FacebookAudienceDestination,
    wait_hint,
)
from retl_dagster.destinations.impl.facebook.audience_config import FacebookAudienceConfig
from retl_dagster.destinations.impl.facebook.exceptions import (
    FacebookAudienceError,
    FacebookAuthError,
    InvalidValue,
)
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.facebook_audience import FakeAudience, FakeMetaAudiences
from retl_dagster_tests.harness import defs_from_yaml, load_warnings, sql

TOKEN = "EAAB-fake-system-user-token"
AUDIENCE = "23851234567890123"
RUN = "20260101T000000Z-abcd"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def meta(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetaAudiences]:
    monkeypatch.setenv("META_TOKEN", TOKEN)
    fake = FakeMetaAudiences(TOKEN, {AUDIENCE: "VIP customers"})
    with fake:
        monkeypatch.setenv("META_URL", fake.url)
        yield fake
    # Every body any test sent was held to Meta's Business SDK (contracts/facebook_audience.py).
    assert fake.contract_failures == []


def destination(fake: FakeMetaAudiences, **options: Any) -> FacebookAudienceDestination:
    config = FacebookAudienceConfig.model_validate(
        {
            "access_token": TOKEN,
            "base_url": fake.url,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.1,
            **options,
        }
    )
    return FacebookAudienceDestination("meta_audience", config)


def batch(records: list[Record], mode: str = "mirror") -> Batch:
    return Batch("vip_audience", RUN, mode, AUDIENCE, records)


def person(i: int, **more: Any) -> Record:
    return Record("added", str(i), {"email": f"Person.{i}@Example.com", **more})


def test_customer_list_values_normalised_and_hashed_as_meta_documents() -> None:
    # Meta's documented examples (the Conversions API publishes these digests for the same
    # normalisation); the others are hashlib's SHA-256 of the documented normalised strings.
    value = normalize.list_value
    assert value("EMAIL", " John_Smith@gmail.com ") == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert value("PHONE", "+1 (650) 555-1212") == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )
    assert value("FN", "Valéry") == (
        "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"
    )
    assert value("LN", "O'Neil-Smith") == sha("oneilsmith")
    assert value("FI", "F.") == sha("f")
    assert value("CT", "Menlo Park") == sha("menlopark")
    assert value("ST", "California") == value("ST", " ca ") == sha("ca")
    assert value("ZIP", "94025-1234") == sha("94025")
    assert value("ZIP", "SW1A 1AA") == sha("sw1a1aa")
    assert value("COUNTRY", "US") == sha("us")
    assert value("GEN", "Female") == sha("f")
    assert value("GEN", "unknown") == ""  # left out, as Meta asks for unknown genders
    assert (value("DOBY", 1991), value("DOBM", "May"), value("DOBD", "7")) == (
        sha("1991"),
        sha("05"),
        sha("07"),
    )
    # MADID and EXTERN_ID go unhashed: an advertising id lower-case with its hyphens, an
    # extern id trimmed with its case (AB1 and ab1 are two customers).
    assert value("MADID", "AECE52E7-03EE-455A-B3C4-E57283966239") == (
        "aece52e7-03ee-455a-b3c4-e57283966239"
    )
    assert value("EXTERN_ID", " AB1 ") == "AB1"
    assert value("EMAIL", sha("a@b.co").upper()) == sha("a@b.co")  # hashed values stay
    with pytest.raises(InvalidValue, match="not a mobile advertising id"):
        value("MADID", "00000000-0000-0000-0000-000000000000")  # limited ad tracking
    # A phone without its country code is read in the row's own country, then the default.
    notes: list[str] = []
    entry = normalize.customer_list_entry(
        {"phone": "(650) 555-1212", "country": "us", "dob": "1991-05-26", "doby": "1850"},
        None,
        notes,
    )
    assert entry == {
        "PHONE": sha("16505551212"),
        "DOBM": sha("05"),
        "DOBD": sha("26"),
        "COUNTRY": sha("us"),
    }
    assert notes == ["doby is not a year of birth (YYYY, 1900 to this year), so it was left out"]
    uk = normalize.customer_list_entry({"phone": "020 7946 0958"}, "44")
    assert uk == {"PHONE": sha("442079460958")}


def test_a_big_batch_goes_as_one_session_of_requests_of_at_most_10000(
    meta: FakeMetaAudiences,
) -> None:
    records = [
        Record("added", str(i), {"email": f"u{i}@x.io", "extern_id": i}) for i in range(20_500)
    ]
    with destination(meta) as dest:
        out = dest.deliver(batch(records))
    assert out.rejected == {} and out.identified == 20_500
    assert [len(u.rows) for u in meta.uploads] == [10_000, 10_000, 500]
    sessions = [u.session for u in meta.uploads]
    assert sessions[0] is not None
    sid = sessions[0]["session_id"]
    assert sessions == [
        {
            "session_id": sid,
            "batch_seq": n,
            "last_batch_flag": n == 3,
            "estimated_num_total": 20_500,
        }
        for n in (1, 2, 3)
    ]
    assert meta.uploads[0].schema == ["EXTERN_ID", "EMAIL"]
    assert len(meta.members(AUDIENCE)) == 20_500
    assert json.loads(out.dest_ids["7"]) == {"EMAIL": sha("u7@x.io"), "EXTERN_ID": "7"}
    # Meta refuses a request of more than 10,000 customers.
    over = {
        "payload": {"schema": ["EMAIL"], "is_raw": True, "data": [[sha("a")]] * 10_001},
        "access_token": TOKEN,
    }
    refused = httpx.post(f"{meta.url}/v25.0/{AUDIENCE}/users", json=over).json()["error"]
    assert refused["code"] == 100 and "at most 10000" in refused["error_user_msg"]
    meta.contract_failures.clear()  # that body was ours, on purpose


def test_mirror_removes_leavers_and_replaced_identifiers(meta: FakeMetaAudiences) -> None:
    with destination(meta) as dest:
        first = dest.deliver(batch([person(i, phone=f"+1 650 555 {i:04d}") for i in (1, 2, 3)]))
        assert first.rejected == {}
        ids = first.dest_ids
        second = dest.deliver(
            batch(
                [
                    Record("removed", "1", dest_id=ids["1"]),
                    # 2 changes email (the old one leaves), 3 changes only case (no request)
                    Record(
                        "changed",
                        "2",
                        {"email": "new2@example.com", "phone": "+16505550002"},
                        dest_id=ids["2"],
                    ),
                    Record(
                        "changed",
                        "3",
                        {"email": "PERSON.3@example.com", "phone": "+16505550003"},
                        dest_id=ids["3"],
                    ),
                    Record("removed", "9", dest_id=None),
                    # 4 takes 1's phone: the removal of 1 leaves that phone in the audience
                    Record("added", "4", {"email": "four@example.com", "phone": "+16505550001"}),
                ]
            )
        )
    assert second.rejected == {
        "9": "the values this customer was added with are unknown (no destination id in state), "
        "so it cannot be removed from the audience"
    }
    assert meta.members(AUDIENCE) == {
        sha("person.3@example.com"),
        sha("new2@example.com"),
        sha("four@example.com"),
    }
    assert meta.members(AUDIENCE, "PHONE") == {sha(f"1650555000{i}") for i in (1, 2, 3)}
    delete, add = meta.uploads[1:]
    assert (delete.method, add.method) == ("DELETE", "POST")
    # 1 leaves without its phone (4 takes it); 2's old email leaves
    assert delete.schema == ["EMAIL"]
    assert sorted(delete.rows) == sorted(
        [[sha("person.1@example.com")], [sha("person.2@example.com")]]
    )
    assert len(add.rows) == 2  # 2 and 4; 3 is already there as it is
    assert second.identified == 3
    assert json.loads(second.dest_ids["2"])["EMAIL"] == sha("new2@example.com")


def test_customers_meta_counts_invalid_are_rejected_with_its_reason(
    meta: FakeMetaAudiences,
) -> None:
    bad = {sha(f"person.{i}@example.com"): "Email is on a suppression list" for i in range(12)}
    meta.invalid |= bad  # Meta names at most 10 of them in its samples
    records = [person(i) for i in range(20)]
    with destination(meta) as dest:
        out = dest.deliver(batch(records, mode="upsert"))
    assert len(out.rejected) == 10
    assert set(out.rejected.values()) == {
        "Meta counted this customer invalid: Email is on a suppression list"
    }
    assert len(out.warnings) == 10 and out.identified == 10
    assert "Meta counted 12 of the request's 20 customers invalid and named 10" in (
        next(iter(out.warnings.values()))
    )
    assert len(meta.members(AUDIENCE)) == 8


def test_a_request_without_an_answer_ends_its_session(meta: FakeMetaAudiences) -> None:
    meta.garbage = 1  # the first request gets a 200 that is no Graph answer
    with destination(meta, rows_per_request=4) as dest:
        out = dest.deliver(batch([person(i) for i in range(10)]))
    assert set(out.rejected) == {"0", "1", "2", "3"}
    assert "did not confirm the request" in out.rejected["0"]
    assert len(meta.members(AUDIENCE)) == 6
    # The other six went in a new session: its own id, numbered from 1, closed at its end.
    sessions = [u.session or {} for u in meta.uploads]
    assert [(s["batch_seq"], s["last_batch_flag"], s["estimated_num_total"]) for s in sessions] == [
        (1, False, 6),
        (2, True, 6),
    ]


def test_the_fake_holds_metas_session_rules(meta: FakeMetaAudiences) -> None:
    url = f"{meta.url}/v25.0/{AUDIENCE}/users"

    def send(session: dict[str, Any], method: str = "POST", rows: int = 1) -> dict[str, Any]:
        body = {
            "payload": {"schema": ["EMAIL"], "is_raw": True, "data": [[sha("a@b.co")]] * rows},
            "session": session,
            "access_token": TOKEN,
        }
        return httpx.request(method, url, json=body).json()

    def refused(answer: dict[str, Any]) -> str:
        assert answer["error"]["code"] == 100, answer
        return str(answer["error"]["error_user_msg"])

    assert "must have batch_seq 1" in refused(send({"session_id": 7, "batch_seq": 2}))
    first = send({"session_id": 7, "batch_seq": 1})
    assert first["num_received"] == 1
    assert send({"session_id": 7, "batch_seq": 1}) == first  # a retry: answered, applied once
    assert "does not follow 1" in refused(send({"session_id": 7, "batch_seq": 3}))
    assert "another audience or operation" in refused(
        send({"session_id": 7, "batch_seq": 2}, "DELETE")
    )
    send({"session_id": 7, "batch_seq": 2, "last_batch_flag": True})
    assert "has ended" in refused(send({"session_id": 7, "batch_seq": 3}))
    assert "session.batch_seq: required" in refused(send({"session_id": 8}))
    assert meta.sessions[7].received == 2
    # Unhashed contact information is an invalid entry, not a member.
    plain = {
        "payload": {"schema": ["EMAIL", "FN"], "is_raw": True, "data": [["a@b.co", sha("ann")]]},
        "access_token": TOKEN,
    }
    answer = httpx.post(url, json=plain).json()
    assert (answer["num_received"], answer["num_invalid_entries"]) == (1, 1)
    assert answer["invalid_entry_samples"] == {
        "a@b.co": "Invalid format: EMAIL must be hashed with SHA-256"
    }
    mismatch = {
        **plain,
        "payload": {"schema": ["EMAIL", "FN"], "is_raw": True, "data": [[sha("x")]]},
    }
    assert "should match the number of keys" in refused(httpx.post(url, json=mismatch).json())
    wrong = httpx.post(url, json={**plain, "access_token": "EAAB-expired"}).json()["error"]
    assert (wrong["code"], wrong["type"]) == (190, "OAuthException")
    meta.contract_failures.clear()  # those bodies broke the contract on purpose


def test_throttling_waits_as_long_as_meta_says(meta: FakeMetaAudiences) -> None:
    usage = {"1000": [{"type": "custom_audience", "estimated_time_to_regain_access": 2}]}
    hinted = httpx.Response(400, headers={"X-Business-Use-Case-Usage": json.dumps(usage)})
    assert wait_hint(hinted) == 120.0  # minutes, capped by backoff_max_s when waiting
    assert wait_hint(httpx.Response(400, headers={"Retry-After": "3"})) == 3.0
    meta.rate_limit, meta.window_s = 1, 0.2
    with destination(meta, rows_per_request=5) as dest:
        out = dest.deliver(batch([person(i) for i in range(20)]))
    assert out.rejected == {} and len(meta.members(AUDIENCE)) == 20
    throttled = [e for e in meta.log if e.status == 400]
    assert throttled and len(meta.uploads) == 4


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ("token", FacebookAuthError, "Meta refused the access token: Invalid OAuth access token"),
        ("audience", FacebookAudienceError, "Object with ID '999' does not exist"),
        ("flagged", FacebookAudienceError, "Audience Upload Blocked: Before updating user"),
        ("proof", FacebookAuthError, "Invalid appsecret_proof"),
    ],
)
def test_a_refused_token_or_an_audience_meta_will_not_change_fails_the_batch(
    change: str, error: type[Exception], words: str, meta: FakeMetaAudiences
) -> None:
    options: dict[str, Any] = {}
    target = AUDIENCE
    if change == "token":
        options["access_token"] = "EAAB-expired-token"
    elif change == "audience":
        target = "999"
    elif change == "flagged":
        meta.audiences[AUDIENCE].flagged = True
    else:
        meta.app_secret = "app-secret"
        options["app_secret"] = "another-secret"
    with destination(meta, **options) as dest, pytest.raises(error, match=words) as raised:
        dest.deliver(Batch("vip_audience", RUN, "upsert", target, [person(1)]))
    said = str(raised.value)
    assert "EAAB-expired-token" not in said and "another-secret" not in said
    assert TOKEN not in said
    assert meta.members(AUDIENCE) == set()


def test_an_app_that_requires_appsecret_proof(meta: FakeMetaAudiences) -> None:
    meta.app_secret = "app-secret"
    with destination(meta, app_secret="app-secret") as dest:
        assert dest.deliver(batch([person(1)])).rejected == {}
        assert "custom audience" in dest.check(AUDIENCE)
    body = meta.log[0].body
    assert body["appsecret_proof"] and "app-secret" not in json.dumps(body)


def test_check_reads_the_audience_and_its_size(meta: FakeMetaAudiences) -> None:
    meta.know(1, sha("person.1@example.com"))
    meta.audiences["555"] = FakeAudience("Lookalike", subtype="LOOKALIKE")
    with destination(meta) as dest:
        dest.deliver(batch([person(1), person(2)]))
        assert dest.check(AUDIENCE) == (
            f"Meta access token accepted; custom audience {AUDIENCE} ('VIP customers') "
            "readable; about 1-1 people"
        )
        assert dest.audience_size(AUDIENCE) == (1, 1)
        assert dest.check() == "Meta access token accepted"
        with pytest.raises(
            FacebookAudienceError, match="is a LOOKALIKE audience, not a customer list"
        ):
            dest.check("555")
        with pytest.raises(FacebookAudienceError, match="custom audience 777 cannot take members"):
            dest.check("777")


def test_the_match_rate_is_metas_over_the_runs_sessions(meta: FakeMetaAudiences) -> None:
    for i in range(6):
        meta.know(i, sha(f"person.{i}@example.com"))
    meta.matching_done = False
    with destination(meta, rows_per_request=4) as dest:
        assert dest.match_rate() is None  # nothing added
        dest.deliver(batch([person(i) for i in range(10)]))
        dest.deliver(batch([person(i) for i in range(10, 15)]))
        assert dest.match_rate() is None  # Meta has not matched them yet
        meta.matching_done = True
        assert dest.match_rate() == pytest.approx(6 / 15)


def test_declarations_meta_cannot_take() -> None:
    dest = DEST
    with pytest.raises(Exception, match="Meta's customer list key for first_name is fn"):
        defs_from_yaml(dest, SYNC.replace("to: fn}", "to: first_name}"))
    with pytest.raises(Exception, match="'age' is not a key of Meta's customer lists"):
        defs_from_yaml(dest, SYNC + "  - {from: zip, to: age}\n")
    with pytest.raises(Exception, match="'audience:vip' is not a custom audience id"):
        defs_from_yaml(dest, SYNC.replace(f'"audience:{AUDIENCE}"', "audience:vip"))
    with pytest.raises(Exception, match="Meta needs a customer identifier"):
        names_only = [
            line for line in SYNC.splitlines() if "{from:" not in line or "to: fn" in line
        ]
        defs_from_yaml(dest, "\n".join(names_only) + "\n  - {from: last_name, to: ln}\n")
    with pytest.raises(Exception, match="does not support mode 'events'"):
        defs_from_yaml(
            dest, SYNC.replace("mode: mirror", "mode: events").replace(": delete", ": nothing")
        )
    with pytest.raises(Exception, match="cannot 'clear'"):
        defs_from_yaml(
            dest, SYNC.replace("mode: mirror", "mode: upsert").replace(": delete", ": clear")
        )


DEST = """
destinations:
  meta_audience:
    type: facebook_audience
    access_token: "{{ env.META_TOKEN }}"
    base_url: "{{ env.META_URL }}"
    rows_per_request: 10
    backoff_initial_s: 0.01
    backoff_max_s: 0.2
"""

SYNC = f"""
name: vip_audience
model: {{table: audience}}
primary_key: user_id
destination: meta_audience
object: "audience:{AUDIENCE}"
mode: mirror
delete_behavior: delete
mappings:
  - {{from: email, to: email}}
  - {{from: phone, to: phone}}
  - {{from: first_name, to: fn}}
  - {{from: last_name, to: ln}}
  - {{from: zip, to: zip}}
  - {{from: country, to: country}}
  - {{from: birthday, to: dob}}
  - {{from: crm_id, to: extern_id}}
"""


def load_metadata(instance: dg.DagsterInstance, sync: str) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(load_key(sync))
    assert event and event.asset_materialization
    return dict(event.asset_materialization.metadata)


def test_a_mirror_sync_adds_replaces_and_removes_members_and_reports_metas_match_rate(
    meta: FakeMetaAudiences, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    # 30 customers; 13 has only a name (nothing Meta can match on); 17's phone has no
    # country code and no country. Meta knows the people behind the first 20 emails.
    sql(
        warehouse_path,
        """create or replace table audience as select i as user_id,
        case when i = 13 then null else 'C-' || i end as crm_id,
        case when i = 13 then null else ' Person.' || i || '@Example.com ' end as email,
        case when i = 13 then null else '(650) 555-' || lpad(i::varchar, 4, '0') end as phone,
        'Ann' as first_name, 'O''Neil' as last_name,
        case when i = 13 then null else '94025-1234' end as zip,
        case when i in (13, 17) then null else 'US' end as country,
        case when i = 13 then null else date '1990-01-01' + to_days(i) end as birthday
        from range(1, 31) t(i)""",
    )
    for i in range(1, 21):
        meta.know(i, sha(f"person.{i}@example.com"))
    defs = defs_from_yaml(DEST, SYNC)
    first = run_sync(defs, "vip_audience", instance)
    assert first.status == "partial", first.summary
    assert (first.summary["succeeded"], first.summary["rejected"]) == (29, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "13" and error.startswith("no customer identifier: Meta needs an email")
    assert meta.members(AUDIENCE) == {
        sha(f"person.{i}@example.com") for i in range(1, 31) if i != 13
    }
    phones = meta.members(AUDIENCE, "PHONE")
    assert sha("16505550007") in phones and len(phones) == 28  # 17's is left out, said why
    assert "no country code" in load_warnings(instance, "vip_audience")["17"]
    assert meta.members(AUDIENCE, "DOBY") == {sha("1990")}
    assert meta.members(AUDIENCE, "EXTERN_ID") == {f"C-{i}" for i in range(1, 31) if i != 13}
    # One session for the run's additions, 10 customers a request (rows_per_request).
    assert [(u.method, len(u.rows), (u.session or {}).get("batch_seq")) for u in meta.uploads] == [
        ("POST", 10, 1),
        ("POST", 10, 2),
        ("POST", 9, 3),
    ]
    # Meta matched 19 of the 29 it received: its rate, not one computed here.
    md = load_metadata(instance, "vip_audience")
    assert md["identified"].value == 29 and md["match_rate"].value == round(19 / 29, 4)

    # Two customers change email, five leave the model, 13 gets an email.
    sql(
        warehouse_path,
        "update audience set email = 'new' || user_id || '@example.com' where user_id <= 2",
    )
    sql(warehouse_path, "update audience set email = 'thirteen@example.com' where user_id = 13")
    sql(warehouse_path, "delete from audience where user_id > 25")
    second = run_sync(defs, "vip_audience", instance)
    s = second.summary
    assert (s["changed"], s["removed"], s["succeeded"], s["rejected"]) == (2, 5, 8, 0), s
    assert meta.members(AUDIENCE) == (
        {sha(f"person.{i}@example.com") for i in range(3, 26) if i != 13}
        | {sha("new1@example.com"), sha("new2@example.com"), sha("thirteen@example.com")}
    )
    assert sha("16505550026") not in meta.members(AUDIENCE, "PHONE")
    assert sha("16505550001") in meta.members(AUDIENCE, "PHONE")
    removals = [u for u in meta.uploads if u.method == "DELETE"]
    assert sum(len(u.rows) for u in removals) == 7  # five leavers, two old emails
    md = load_metadata(instance, "vip_audience")
    assert md["identified"].value == 3 and md["match_rate"].value == 0.0  # nobody Meta knows
