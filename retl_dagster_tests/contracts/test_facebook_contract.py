"""Every Conversions API body our client sends uses only the names Meta's Business SDK puts on
the wire, in the SDK's shapes; the validator accepts the SDK's own output and refuses the shapes
our client used to send."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.user_data import UserData

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.facebook import (
    FacebookConversionsConfig,
    FacebookConversionsDestination,
)
from retl_dagster.destinations.impl.facebook.normalize import USER_DATA_KEYS
from retl_dagster_tests.contracts import facebook as contract
from retl_dagster_tests.fakes.facebook import FakeMetaConversions

TOKEN, PIXEL = "EAAB-token", "123"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fake() -> Iterator[FakeMetaConversions]:
    server = FakeMetaConversions(TOKEN, PIXEL)
    with server:
        yield server


def sdk_event() -> dict[str, Any]:
    """An event as the SDK itself builds it for the wire."""
    user = UserData(
        emails=["Person@Example.com"],
        phones=["16505551212"],
        genders=[Gender.FEMALE],
        first_name="Mary",
        external_id="U1",
        client_ip_address="1.2.3.4",
        client_user_agent="Mozilla/5.0",
        fbc="fb.1.1554763741205.AbCd",
    )
    custom = CustomData(value=12.5, currency="usd", custom_properties={"tier": "gold"})
    event = Event(
        event_name="Purchase",
        event_time=int(time.time()),
        event_id="e-1",
        user_data=user,
        custom_data=custom,
        action_source=ActionSource.WEBSITE,
        event_source_url="https://shop.example/checkout",
    )
    return dict(event.normalize())


def test_the_sdks_own_output_conforms() -> None:
    assert contract.problems({"data": [sdk_event()], "access_token": TOKEN}) == []


def test_our_customer_keys_are_all_documented_or_in_the_sdk() -> None:
    # The client's user_data keys: each one the SDK sends, or one Meta documents and the SDK
    # lacks (see DOCUMENTED_ONLY_USER_DATA: the docs win).
    assert set(USER_DATA_KEYS) <= set(contract.user_data_shapes())


def test_every_event_our_client_sends_conforms(fake: FakeMetaConversions) -> None:
    config = FacebookConversionsConfig(
        access_token=TOKEN,  # type: ignore[arg-type]
        pixel_id=PIXEL,
        base_url=fake.url,  # type: ignore[arg-type]
        default_phone_country_code="1",
        test_event_code="TEST123",
    )
    fields = {
        "em": " Person@Example.com ",
        "ph": ["(650) 555-1212", "+44 (0)20 7946 0958"],
        "fn": "Mary",
        "ln": "Smith-Jones",
        "ge": "female",
        "db": "1991-05-26",
        "ct": "Menlo Park",
        "st": "California",
        "zp": "94025-1234",
        "country": "US",
        "external_id": "U1",
        "client_ip_address": "1.2.3.4",
        "client_user_agent": "Mozilla/5.0",
        "fbc": "fb.1.1554763741205.AbCd",
        "fbp": "fb.1.1596403881668.1116446470",
        "event_source_url": "https://shop.example/checkout",
        "action_source": "website",
        "value": 12.5,
        "currency": "USD",
        "tier": "gold",
    }
    bad_db = {"em": "a@b.co", "db": "not a date"}
    batch = Batch(
        "s",
        dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-x"),  # event time: the run's start
        "events",
        "Purchase",
        [Record("event", "1", fields), Record("event", "2", bad_db)],
    )
    with FacebookConversionsDestination("meta", config) as dest:
        assert dest.deliver(batch).rejected == {}
    assert fake.contract_failures == [] and len(fake.test_events) == 2
    [body] = [e.body for e in fake.log]
    assert contract.problems(body) == []
    user = fake.test_events[0]["user_data"]
    assert user["ph"] == [sha("16505551212"), sha("442079460958")]
    assert user["external_id"] == [sha("U1")]


OLD_EVENT = {
    "event_name": "Purchase",
    "event_time": int(time.time()),
    "action_source": "system_generated",
    "user_data": {"em": sha("person@example.com"), "external_id": sha("u1")},
}
"""An event as our client used to send it: hashed values as bare strings."""


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (OLD_EVENT, "user_data.em: must be a list of strings"),
        (
            {**OLD_EVENT, "user_data": {"email": [sha("a@b.co")]}},
            "user_data.email: not a customer information parameter",
        ),
        ({**OLD_EVENT, "user_data": {"em": ["a@b.co"]}}, "SHA-256"),
        ({**OLD_EVENT, "user_data": {"em": [sha("x")]}, "eventTime": 1}, "eventTime: not a"),
        ({**OLD_EVENT, "user_data": {"em": [sha("x")]}, "event_time": "1"}, "event_time: wrong"),
        (
            {**OLD_EVENT, "user_data": {"em": [sha("x")]}, "action_source": "crm"},
            "action_source: wrong",
        ),
        (
            {**OLD_EVENT, "user_data": {"em": [sha("x")]}, "custom_data": {"value": "12"}},
            "custom_data.value: wrong type",
        ),
    ],
)
def test_the_old_and_unknown_shapes_are_refused(
    fake: FakeMetaConversions, event: dict[str, Any], words: str
) -> None:
    body = {"data": [event], "access_token": TOKEN}
    found = contract.problems(body)
    assert any(words in p for p in found), found
    # The fake answers as the Graph API does for an invalid parameter: 400, code 100.
    response = httpx.post(f"{fake.url}/v25.0/{PIXEL}/events", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == 100
    assert fake.events == [] and len(fake.contract_failures) == 1


def test_an_unknown_top_level_parameter_is_refused() -> None:
    body = {"data": [sdk_event()], "access_token": TOKEN, "test_code": "X"}
    assert contract.problems(body) == ["test_code: not a parameter of the events endpoint"]
