"""Meta Conversions API: purchases as server events, through Dagster, against a fake API."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic
import pytest

from retl_dagster.cli import _histories, _summary_line
from retl_dagster.common.encoding import run_time
from retl_dagster.components.sync import load_key
from retl_dagster.destinations import phones
from retl_dagster.destinations.impl.facebook import FacebookConversionsConfig, normalize
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.facebook import FakeMetaConversions
from retl_dagster_tests.harness import defs_from_yaml, load_warnings, sql

TOKEN = "EAAB-fake-system-user-token"
PIXEL = "1234567890"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def meta(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetaConversions]:
    monkeypatch.setenv("META_TOKEN", TOKEN)
    fake = FakeMetaConversions(TOKEN, PIXEL)
    with fake:
        monkeypatch.setenv("META_URL", fake.url)
        yield fake
    # Every request any test sent was held to Meta's Business SDK (contracts/facebook.py).
    assert fake.contract_failures == []


DEST = f"""
destinations:
  meta:
    type: facebook_conversions
    access_token: "{{{{ env.META_TOKEN }}}}"
    pixel_id: "{PIXEL}"
    base_url: "{{{{ env.META_URL }}}}"
    default_phone_country_code: "1"
    backoff_initial_s: 0.05
    backoff_max_s: 1
"""

SYNC = """
name: purchases_to_meta
model: {table: orders}
primary_key: order_id
destination: meta
object: Purchase
mode: events
mappings:
  - {from: email, to: em}
  - {from: phone, to: ph}
  - {from: first_name, to: fn}
  - {from: last_name, to: ln}
  - {from: city, to: ct}
  - {from: zip, to: zp}
  - {from: country, to: country}
  - {from: user_id, to: external_id}
  - {from: ordered_at, to: event_time}
  - {from: amount, to: value}
  - {from: currency, to: currency}
"""


def orders(path: Path, first: int, last: int, replace: bool = True) -> None:
    """Orders `first`..`last`; every tenth has no email, phone or user id (names and place
    only), so it reaches Meta but identifies nobody by itself."""
    head = "create or replace table orders as" if replace else "insert into orders"
    sql(
        path,
        f"""{head} select i as order_id,
        case when i % 10 = 0 then null else 'u' || i end as user_id,
        case when i % 10 = 0 then null else ' User' || i || '@Example.com ' end as email,
        case when i % 10 = 0 then null else '(650) 555-' || lpad(i::varchar, 4, '0') end
            as phone,
        'Mary' as first_name, 'Smith-Jones' as last_name, 'Menlo Park' as city,
        '94025-1234' as zip, 'US' as country,
        now() - to_minutes(i) as ordered_at, (i * 10.5)::decimal(10, 2) as amount,
        'USD' as currency
        from range({first}, {last + 1}) t(i)""",
    )


def test_customer_information_hashed_as_meta_documents() -> None:
    # Meta's documented examples, with the SHA-256 Meta publishes for each
    # (Conversions API > Customer Information Parameters).
    assert normalize.hash_value("em", "John_Smith@gmail.com") == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    # "US phone number (650)555-1212" -> 16505551212: the US country code 1 comes from
    # default_phone_country_code, as the number carries none.
    assert normalize.hash_value("ph", "(650)555-1212", phone_country_code="1") == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )
    assert normalize.hash_value("ph", "+1 650-555-1212") == normalize.hash_value(
        "ph", "(650)555-1212", phone_country_code="1"
    )
    assert normalize.hash_value("fn", "Mary") == (
        "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
    )
    assert normalize.hash_value("fn", "정") == (
        "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"
    )
    assert normalize.hash_value("fn", "Valéry") == (
        "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"
    )
    assert normalize.hash_value("fn", "Vale\u0301ry") == normalize.hash_value("fn", "Valéry")
    # Meta documents the normalised forms of these but publishes no digest: the expected
    # values are hashlib's SHA-256 of the documented normalised strings.
    assert normalize.hash_value("ln", "Smith-Jones") == sha("smithjones")
    assert normalize.hash_value("ct", "Menlo Park") == sha("menlopark")
    assert normalize.hash_value("st", "California") == sha("ca")
    assert normalize.hash_value("st", " CA ") == sha("ca")
    assert normalize.hash_value("zp", "94025-1234") == sha("94025")
    assert normalize.hash_value("zp", "SW1A 1AA") == sha("sw1a1aa")
    assert normalize.hash_value("country", "US") == sha("us")
    assert normalize.hash_value("db", "1991-05-26") == sha("19910526")
    assert normalize.hash_value("ge", "Female") == sha("f")
    assert normalize.hash_value("ge", "unknown") is None  # Meta: leave unknown genders out
    # external_id: trimmed only (Meta's normalisation); its case is part of the id.
    assert normalize.hash_value("external_id", " ABC-123 ") == sha("ABC-123")
    assert normalize.hash_value("external_id", "abc-123") != normalize.hash_value(
        "external_id", "ABC-123"
    )
    already = sha("john_smith@gmail.com")
    assert normalize.hash_value("em", already.upper()) == already  # hashed values stay
    data = normalize.user_data(
        {"em": ["A@x.com", None], "fbc": "fb.1.1554763741205.AbCd", "client_ip_address": "1.2.3.4"}
    )
    assert data == {
        "em": [sha("a@x.com")],  # hashed keys go as lists, as the SDK sends them
        "fbc": "fb.1.1554763741205.AbCd",  # never hashed
        "client_ip_address": "1.2.3.4",
    }


def test_purchases_become_hashed_server_events_then_only_new_rows(
    meta: FakeMetaConversions, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path, 1, 50)
    defs = defs_from_yaml(DEST, SYNC)
    first = run_sync(defs, "purchases_to_meta", instance)
    assert first.status == "succeeded", first.summary
    assert len(meta.events) == 50 and meta.duplicates == 0
    by_user = {
        e["user_data"]["external_id"][0]: e for e in meta.events if "external_id" in e["user_data"]
    }
    seven = by_user[sha("u7")]
    [(ordered_at,)] = sql(warehouse_path, "select ordered_at from orders where order_id = 7")
    assert seven["event_name"] == "Purchase"
    assert seven["event_time"] == int(ordered_at.timestamp())
    assert seven["action_source"] == "system_generated"
    assert seven["event_id"].startswith("retl-")
    assert seven["custom_data"] == {"value": 73.5, "currency": "USD"}
    assert seven["user_data"] == {
        "em": [sha("user7@example.com")],
        "ph": [sha("16505550007")],
        "fn": [sha("mary")],
        "ln": [sha("smithjones")],
        "ct": [sha("menlopark")],
        "zp": [sha("94025")],
        "country": [sha("us")],
        "external_id": [sha("u7")],
    }
    assert len({e["event_id"] for e in meta.events}) == 50

    # 45 of 50 carry an email, phone or user id; Meta reports no match rate.
    md = instance.get_latest_materialization_event(
        load_key("purchases_to_meta")
    ).asset_materialization.metadata  # type: ignore[union-attr]
    assert md["identified"].value == 45 and "match_rate" not in md and "matched" not in md
    assert sql(
        warehouse_path,
        "select identified, matched, match_rate from _retl.sync_runs "
        f"where run_id = '{first.summary['run_id']}'",
    ) == [(45, None, None)]

    # Events are insert-only: a changed order is not resent, new orders are.
    sql(warehouse_path, "update orders set amount = 1 where order_id <= 3")
    orders(warehouse_path, 51, 55, replace=False)
    second = run_sync(defs, "purchases_to_meta", instance)
    assert (second.summary["added"], second.summary["changed"]) == (5, 3)
    assert second.summary["succeeded"] == 5 and len(meta.events) == 55


def test_retl_runs_summary_line_shows_identified_rows(
    meta: FakeMetaConversions, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path, 1, 20)
    assert run_sync(defs_from_yaml(DEST, SYNC), "purchases_to_meta", instance).status == (
        "succeeded"
    )
    [line] = [_summary_line(s) for s in _histories(["purchases_to_meta"], 5)["purchases_to_meta"]]
    assert "18 identified, match rate not reported" in line


def test_an_old_event_fails_metas_request_and_is_isolated(
    meta: FakeMetaConversions, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path, 1, 300)
    sql(
        warehouse_path, "update orders set ordered_at = now() - interval 10 day where order_id = 77"
    )
    out = run_sync(defs_from_yaml(DEST, SYNC), "purchases_to_meta", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (299, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "77"
    assert "Event Timestamp Too Old" in error and "within 7 days" in error
    assert "code 100/2804003" in error
    assert len(meta.events) == 299 and meta.duplicates == 0
    assert meta.count("/events", 400) <= 2 * 9 + 1  # halving: about two requests per level


@pytest.mark.parametrize("status", [400, 429])
def test_throttling_is_survived_without_loss_or_doubles(
    status: int, meta: FakeMetaConversions, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    meta.rate_limit, meta.window_s, meta.throttle_status = 2, 0.5, status
    orders(warehouse_path, 1, 120)
    dest = DEST.replace("backoff_max_s: 1", "backoff_max_s: 1\n    batch_size: 10")
    out = run_sync(defs_from_yaml(dest, SYNC), "purchases_to_meta", instance)
    assert out.status == "succeeded", out.summary
    assert meta.count("/events", status) > 0  # throttled (Graph code 17, or HTTP 429)
    assert len(meta.events) == 120 and meta.duplicates == 0


def test_a_replay_is_deduplicated_by_event_id(
    meta: FakeMetaConversions, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    orders(warehouse_path, 1, 20)
    defs = defs_from_yaml(DEST, SYNC)
    first = run_sync(defs, "purchases_to_meta", instance)
    replay = run_sync(defs, "purchases_to_meta", instance, replay_of=first.summary["run_id"])
    assert replay.status == "succeeded" and replay.summary["succeeded"] == 20
    assert meta.duplicates == 20 and len(meta.events) == 20


def test_a_refused_token_fails_the_run_and_marks_nothing_synced(
    meta: FakeMetaConversions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("META_TOKEN", "EAAB-expired")
    orders(warehouse_path, 1, 10)
    out = run_sync(defs_from_yaml(DEST, SYNC), "purchases_to_meta", instance)
    assert out.status == "failed"
    assert "Meta refused the access token" in out.summary["error"]
    assert "EAAB-expired" not in out.summary["error"]
    assert sql(
        warehouse_path,
        "select count(*) from _retl.sync_record_results where status = 'succeeded'",
    ) == [(0,)]
    assert meta.events == []


def test_declarations_meta_cannot_take() -> None:
    with pytest.raises(Exception, match="does not support mode 'upsert'"):
        defs_from_yaml(DEST, SYNC.replace("mode: events", "mode: upsert"))
    with pytest.raises(Exception, match="customer information key for email is em"):
        defs_from_yaml(DEST, SYNC.replace("to: em}", "to: email}"))
    with pytest.raises(Exception, match="Meta needs an event name"):
        defs_from_yaml(DEST, SYNC.replace("object: Purchase\n", ""))
    # a column may name each row's event instead
    defs_from_yaml(
        DEST, SYNC.replace("object: Purchase\n", "") + "  - {from: currency, to: event_name}\n"
    )


def test_event_time_from_epoch_and_naive_timestamps() -> None:
    from retl_dagster.destinations.impl.facebook.client import unix_seconds

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert unix_seconds("2025-12-31T23:00:00", now) == int(now.timestamp()) - 3600
    assert unix_seconds("2025-12-31T23:00:00+01:00", now) == int(now.timestamp()) - 7200
    assert unix_seconds(1_767_225_600_000, now) == 1_767_225_600  # milliseconds
    assert unix_seconds(None, now) == int(now.timestamp())


def test_phone_numbers_normalised_by_their_country() -> None:
    # Meta: E.164 digits, no "+"; a national number takes the destination's default country,
    # given as a calling code or an ISO region; its trunk 0 goes.
    assert normalize.phone("(650) 555-1212", "1") == "16505551212"
    assert normalize.phone("(650) 555-1212", "US") == "16505551212"
    assert normalize.phone("+44 (0)20 7946 0958") == "442079460958"
    assert normalize.phone("020 7946 0958", "44") == "442079460958"
    assert normalize.phone("0044 20 7946 0958", "1") == "442079460958"
    with pytest.raises(phones.PhoneError, match="no country code"):
        normalize.phone("(650) 555-1212")  # not +6505551212: the country is unknown
    with pytest.raises(phones.PhoneError, match="not a valid number"):
        normalize.phone("+1 555")
    notes: list[str] = []
    data = normalize.user_data(
        {"em": "a@x.com", "ph": "(650) 555-1212", "db": "26/05/1991"}, None, notes
    )
    assert data == {"em": [sha("a@x.com")]}  # phone and db left out, the rest goes
    assert len(notes) == 2 and "no country code" in notes[0] and "db is not a date" in notes[1]
    config: dict[str, Any] = {"access_token": "t", "pixel_id": PIXEL}
    assert FacebookConversionsConfig.model_validate(config | {"default_phone_country_code": "GB"})
    with pytest.raises(pydantic.ValidationError, match="neither a country calling code nor"):
        FacebookConversionsConfig.model_validate(config | {"default_phone_country_code": "XY"})
    with pytest.raises(pydantic.ValidationError, match="not a country calling code"):
        FacebookConversionsConfig.model_validate(config | {"default_phone_country_code": "999"})


CASES = """create or replace table orders as select * from (values
    (1, 'U1', '(650) 555-1212', '1991-05-26'),
    (2, 'u1', '+44 (0)20 7946 0958', '1991-02-30'),
    (3, 'u3', '650 555 1213', 'not a date')
) t(order_id, user_id, phone, birthday)"""

CASES_SYNC = """
name: people_to_meta
model: {table: orders}
primary_key: order_id
destination: meta
object: Lead
mode: events
mappings:
  - {from: user_id, to: external_id}
  - {from: phone, to: ph}
  - {from: birthday, to: db}
"""


def test_phones_external_id_case_a_bad_db_and_the_run_time_as_event_time(
    meta: FakeMetaConversions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(warehouse_path, CASES)
    out = run_sync(defs_from_yaml(DEST, CASES_SYNC), "people_to_meta", instance)
    assert out.status == "succeeded", out.summary
    assert out.summary["succeeded"] == 3 and len(meta.events) == 3
    users = {e["user_data"]["external_id"][0]: e["user_data"] for e in meta.events}
    # default_phone_country_code 1: (650) 555-1212 is +1 650 555 1212, digits only for Meta
    assert users[sha("U1")]["ph"] == [sha("16505551212")]
    assert users[sha("U1")]["db"] == [sha("19910526")]
    # +44 (0)20 ...: the trunk 0 goes
    assert users[sha("u1")]["ph"] == [sha("442079460958")]
    # external_id keeps its case: U1 and u1 are two people
    assert sha("U1") != sha("u1") and len(users) == 3
    # a date of birth that is no date leaves db out; the event still goes
    assert "db" not in users[sha("u1")] and "db" not in users[sha("u3")]
    warned = load_warnings(instance, "people_to_meta")
    assert sum("db is not a date of birth" in w for w in warned.values()) == 2
    # no event_time mapped: the run's start time, the same on every retry of the run
    started = int(run_time(out.summary["run_id"]).timestamp())
    assert {e["event_time"] for e in meta.events} == {started}


def test_a_phone_without_a_country_code_is_left_out_with_a_reason(
    meta: FakeMetaConversions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    sql(warehouse_path, CASES)
    dest = DEST.replace('    default_phone_country_code: "1"\n', "")
    out = run_sync(defs_from_yaml(dest, CASES_SYNC), "people_to_meta", instance)
    assert out.status == "succeeded", out.summary
    users = {e["user_data"]["external_id"][0]: e["user_data"] for e in meta.events}
    assert "ph" not in users[sha("U1")] and "ph" not in users[sha("u3")]  # not +6505551212
    assert users[sha("u1")]["ph"] == [sha("442079460958")]  # it carries its country code
    warned = load_warnings(instance, "people_to_meta")
    assert {k for k, w in warned.items() if "no country code" in w} == {"1", "3"}
    assert "set default_phone_country_code" in warned["1"]
