"""Braze contract: no Braze SDK for Python exists, so the contract is Braze's own event and
purchase object references, written into the fake (`fakes/braze.py`, `event_problem`), which
checks every /users/track object it receives. Here: what our client sends passes those rules and
carries the vendor's own fields (time, quantity), and the rules refuse the old shapes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.braze import BrazeConfig, BrazeDestination
from retl_dagster_tests.fakes.braze import FakeBraze, event_problem

KEY = "rest-key"
RUN_ID = "20260131T120000Z-contract"


@pytest.fixture
def fake() -> Iterator[FakeBraze]:
    server = FakeBraze(KEY)
    with server:
        yield server


def deliver(fake: FakeBraze, object_: str, fields: list[dict[str, Any]]) -> dict[str, str]:
    config = BrazeConfig(
        api_key=KEY,  # type: ignore[arg-type]
        base_url=fake.url,  # type: ignore[arg-type]
        backoff_initial_s=0.01,
    )
    records = [
        Record(op="event", key=str(i), fields=f, match_value=f"ext-{i}")
        for i, f in enumerate(fields)
    ]
    batch = Batch(
        sync="bz",
        run_id=RUN_ID,
        mode="events",
        object=object_,
        records=records,
        match_field="external_id",
    )
    with BrazeDestination("braze", config) as dest:
        return dest.deliver(batch).rejected


def test_event_time_is_the_objects_own_time(fake: FakeBraze) -> None:
    rows = [{"time": "2026-01-15 10:00:00", "plan": "pro"}, {"plan": "free"}]
    assert deliver(fake, "Plan Reviewed", rows) == {}
    mapped, unmapped = fake.events
    assert set(mapped) == {"external_id", "name", "time", "properties"}
    # A naive warehouse timestamp is UTC; the run's start time where none is mapped.
    assert mapped["time"] == "2026-01-15T10:00:00.000+00:00"
    assert unmapped["time"] == "2026-01-31T12:00:00.000+00:00"
    assert mapped["properties"] == {"plan": "pro"}  # never the time among the properties


def test_purchase_quantity_and_time_are_purchase_fields(fake: FakeBraze) -> None:
    row = {
        "product_id": "SKU-1",
        "currency": "USD",
        "price": 9.5,
        "quantity": 3.0,  # a DECIMAL column arrives as a float: still a whole number
        "time": 1768471200,  # epoch seconds: 2026-01-15T10:00:00Z
        "plan": "pro",
    }
    assert deliver(fake, "purchases", [row]) == {}
    [purchase] = fake.purchases
    assert purchase["quantity"] == 3 and isinstance(purchase["quantity"], int)
    assert purchase["time"] == "2026-01-15T10:00:00.000+00:00"
    assert purchase["properties"] == {"plan": "pro"}


def test_rows_braze_would_refuse_are_rejected_alone(fake: FakeBraze) -> None:
    base = {"product_id": "SKU-1", "currency": "USD", "price": 1.0}
    rows = [
        {**base, "quantity": 2.5},
        {**base, "quantity": 101},
        {**base, "time": "last week"},
        {**base, "quantity": 1},
    ]
    rejected = deliver(fake, "purchases", rows)
    assert sorted(rejected) == ["0", "1", "2"] and len(fake.purchases) == 1
    assert "whole number from 1 to 100" in rejected["0"]
    assert "is not a timestamp" in rejected["2"]


GOOD_EVENT = {"external_id": "e", "name": "E", "time": "2026-01-15T10:00:00.000+00:00"}
GOOD_PURCHASE = {
    "external_id": "e",
    "product_id": "p",
    "currency": "USD",
    "price": 1.5,
    "quantity": 2,
    "time": "2026-01-15T10:00:00+00:00",
}


@pytest.mark.parametrize(
    ("array", "obj", "problem"),
    [
        # The old shape: the time of sending as the event's time, the mapped one in properties.
        ("events", {**GOOD_EVENT, "properties": {"time": "2026-01-15"}}, "reserved keys"),
        ("purchases", {**GOOD_PURCHASE, "properties": {"time": "2026-01-15"}}, "reserved keys"),
        ("events", {**GOOD_EVENT, "time": None}, "ISO 8601"),
        ("events", {k: v for k, v in GOOD_EVENT.items() if k != "time"}, "'time' is required"),
        ("events", {**GOOD_EVENT, "time": 1768471200}, "ISO 8601"),
        ("events", {**GOOD_EVENT, "time": "15/01/2026"}, "ISO 8601"),
        ("events", {**GOOD_EVENT, "quantity": 1}, "unknown fields"),
        ("purchases", {**GOOD_PURCHASE, "quantity": 1.5}, "'quantity'"),
        ("purchases", {**GOOD_PURCHASE, "quantity": 101}, "'quantity'"),
        ("purchases", {**GOOD_PURCHASE, "quantity": "2"}, "'quantity'"),
        ("purchases", {**GOOD_PURCHASE, "price": "1.5"}, "'price'"),
        ("purchases", {**GOOD_PURCHASE, "currency": "US"}, "'currency'"),
        ("purchases", {**GOOD_PURCHASE, "name": "Buy"}, "unknown fields"),
        ("purchases", {k: v for k, v in GOOD_PURCHASE.items() if k != "product_id"}, "product_id"),
    ],
)
def test_the_reference_rules_refuse(array: str, obj: dict[str, Any], problem: str) -> None:
    assert problem in (event_problem(array, obj) or "")


def test_the_reference_rules_accept_documented_shapes() -> None:
    assert event_problem("events", GOOD_EVENT) is None
    assert event_problem("events", {**GOOD_EVENT, "time": "2013-07-16T19:20:30:450+0100"}) is None
    assert event_problem("purchases", GOOD_PURCHASE) is None
    assert event_problem("purchases", {**GOOD_PURCHASE, "app_id": "a", "properties": {}}) is None


def test_fake_reports_a_refused_object_as_braze_does(fake: FakeBraze) -> None:
    body = {"events": [GOOD_EVENT, {**GOOD_EVENT, "time": "later"}]}
    answer = requests.post(
        f"{fake.url}/users/track",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert answer.status_code == 201
    [error] = answer.json()["errors"]
    assert (error["input_array"], error["index"]) == ("events", 1)
    assert len(fake.events) == 1


def test_now_is_never_the_event_time(fake: FakeBraze) -> None:
    assert deliver(fake, "E", [{"plan": "pro"}]) == {}
    sent = dt.datetime.fromisoformat(fake.events[0]["time"])
    assert sent == dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
