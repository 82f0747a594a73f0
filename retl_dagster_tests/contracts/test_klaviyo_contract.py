"""Klaviyo's request models (the `klaviyo-api` SDK) against the bodies our client builds, and the
check refusing bodies Klaviyo would refuse."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.klaviyo import KlaviyoConfig, KlaviyoDestination
from retl_dagster_tests.contracts.klaviyo import ContractError, check_request
from retl_dagster_tests.fakes.klaviyo import FakeKlaviyo

KEY = "pk_contract"
RUN_ID = "20260131T120000Z-contract"
IMPORT = "POST /api/profile-bulk-import-jobs"
EVENTS = "POST /api/event-bulk-create-jobs"


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    server = FakeKlaviyo(KEY)
    server.lists["L1"] = set()
    with server:
        yield server


def deliver(fake: FakeKlaviyo, mode: str, object_: str, records: list[Record]) -> dict[str, str]:
    config = KlaviyoConfig(
        private_key=KEY,  # type: ignore[arg-type]
        base_url=fake.url,  # type: ignore[arg-type]
        poll_interval_s=0.01,
    )
    batch = Batch("kl", RUN_ID, mode, object_, records, match_field="email")
    with KlaviyoDestination("klaviyo", config) as dest:
        return dest.deliver(batch).rejected


def test_every_body_the_client_sends_fits_klaviyos_models(fake: FakeKlaviyo) -> None:
    fields = {"first_name": "Ada", "ltv": 12.5, "vip": True, "tags": ["a"], "city": None}
    profiles = [Record("added", str(i), fields, match_value=f"p{i}@example.com") for i in range(3)]
    assert deliver(fake, "upsert", "list:L1", profiles) == {}
    assert (
        deliver(fake, "upsert", "list:L1", [Record("removed", "0", match_value="p0@example.com")])
        == {}
    )
    events = [
        Record(
            "event",
            "e1",
            {"time": "2026-01-15 10:00:00", "value": 9.5, "sku": "A"},
            "p1@example.com",
        ),
        Record("event", "e2", {"value_currency": "EUR", "value": 3}, "p2@example.com"),
    ]
    assert deliver(fake, "events", "Placed Order", events) == {}
    assert fake.contract_errors == []
    writes = [e for e in fake.log if e.method in ("POST", "DELETE")]
    assert {e.path for e in writes} == {
        "/api/profile-bulk-import-jobs",
        "/api/lists/L1/relationships/profiles",
        "/api/event-bulk-create-jobs",
    }
    for entry in writes:  # as the fake did, and none was refused
        endpoint = entry.path.replace("/L1/", "/{id}/")
        check_request(f"{entry.method} {endpoint}", entry.body)
        assert entry.status < 400
    [profile_id] = [p for p, v in fake.profiles.items() if v["email"] == "p1@example.com"]
    assert fake.profiles[profile_id] == {
        "email": "p1@example.com",
        "first_name": "Ada",
        "properties": {"ltv": 12.5, "vip": True, "tags": ["a"]},  # a null is left out
    }
    assert len(fake.lists["L1"]) == 2  # p0 removed from the list
    first = next(e for e in fake.events if e["profile_id"] == profile_id)
    assert first["time"] == "2026-01-15T10:00:00+00:00" and first["properties"] == {"sku": "A"}
    second = next(e for e in fake.events if e["profile_id"] != profile_id)
    assert second["time"] == "2026-01-31T12:00:00+00:00"  # the run's start where none is mapped
    assert (second["value"], second["value_currency"]) == (3, "EUR")


def test_a_resent_batch_of_events_is_not_doubled(fake: FakeKlaviyo) -> None:
    events = [Record("event", str(i), {"n": i}, f"p{i}@example.com") for i in range(5)]
    assert deliver(fake, "events", "Viewed", events) == {}
    assert deliver(fake, "events", "Viewed", events) == {}  # a retry after a crash
    assert len(fake.events) == 5 and fake.dropped_duplicates == 5


def test_a_job_klaviyo_refuses_whole_is_halved_to_the_bad_row(fake: FakeKlaviyo) -> None:
    long_name = "x" * 130  # refused by the reference's limit, not caught before sending
    events = [Record("event", str(i), {}, f"p{i}@example.com") for i in range(4)]
    rejected = deliver(fake, "events", long_name, events)
    assert sorted(rejected) == ["0", "1", "2", "3"]
    assert "must be less than 128 characters" in rejected["0"]
    fake.contract_errors.clear()


GOOD_IMPORT: dict[str, Any] = {
    "data": {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {"email": "a@example.com", "properties": {"plan": "pro"}},
                    }
                ]
            }
        },
        "relationships": {"lists": {"data": [{"type": "list", "id": "L1"}]}},
    }
}
GOOD_EVENTS: dict[str, Any] = {
    "data": {
        "type": "event-bulk-create-job",
        "attributes": {
            "events-bulk-create": {
                "data": [
                    {
                        "type": "event-bulk-create",
                        "attributes": {
                            "profile": {
                                "data": {"type": "profile", "attributes": {"email": "a@b.co"}}
                            },
                            "events": {
                                "data": [
                                    {
                                        "type": "event",
                                        "attributes": {
                                            "properties": {},
                                            "time": "2026-01-15T10:00:00+00:00",
                                            "metric": {
                                                "data": {
                                                    "type": "metric",
                                                    "attributes": {"name": "Viewed"},
                                                }
                                            },
                                            "unique_id": "u1",
                                        },
                                    }
                                ]
                            },
                        },
                    }
                ]
            }
        },
    }
}


def _profile(body: dict[str, Any]) -> dict[str, Any]:
    return body["data"]["attributes"]["profiles"]["data"][0]["attributes"]  # type: ignore[no-any-return]


def _event(body: dict[str, Any]) -> dict[str, Any]:
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][0]
    return entry["attributes"]["events"]["data"][0]["attributes"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("endpoint", "good", "spoil", "problem"),
    [
        (IMPORT, GOOD_IMPORT, lambda b: _profile(b).update(emial="x"), "unknown key 'emial'"),
        (IMPORT, GOOD_IMPORT, lambda b: _profile(b).update(email=5), "valid string"),
        (IMPORT, GOOD_IMPORT, lambda b: _profile(b).update(properties="x"), "valid dictionary"),
        (IMPORT, GOOD_IMPORT, lambda b: _profile(b).pop("email"), "needs one of email"),
        (IMPORT, GOOD_IMPORT, lambda b: b["data"].update(type="profile-import"), "body.type"),
        (
            IMPORT,
            GOOD_IMPORT,
            lambda b: b["data"]["attributes"]["profiles"].update(data=[_profile(b)] * 2),
            "unknown key 'email'",  # attributes without their resource object
        ),
        (EVENTS, GOOD_EVENTS, lambda b: _event(b).update(value="9.5"), "valid number"),
        (EVENTS, GOOD_EVENTS, lambda b: _event(b).pop("metric"), "metric"),
        (EVENTS, GOOD_EVENTS, lambda b: _event(b).update(name="Viewed"), "unknown key 'name'"),
        (EVENTS, GOOD_EVENTS, lambda b: _event(b).pop("properties"), "properties"),
    ],
)
def test_the_contract_refuses_a_wrong_body(
    endpoint: str, good: dict[str, Any], spoil: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    check_request(endpoint, good)  # the good one passes
    body = copy.deepcopy(good)
    spoil(body)
    with pytest.raises(ContractError, match=problem):
        check_request(endpoint, body)


def test_list_membership_bodies_take_profile_ids_only() -> None:
    check_request(
        "DELETE /api/lists/{id}/relationships/profiles", {"data": [{"type": "profile", "id": "P1"}]}
    )
    with pytest.raises(ContractError, match="valid string"):
        check_request(
            "POST /api/lists/{id}/relationships/profiles", {"data": [{"type": "profile", "id": 1}]}
        )
    with pytest.raises(ContractError, match="at most 1000"):
        check_request(
            "POST /api/lists/{id}/relationships/profiles",
            {"data": [{"type": "profile", "id": "P"}] * 1001},
        )


def test_the_fake_answers_a_refused_body_with_json_api_errors(fake: FakeKlaviyo) -> None:
    body = copy.deepcopy(GOOD_IMPORT)
    _profile(body)["emial"] = "a@example.com"
    answer = httpx.post(
        f"{fake.url}/api/profile-bulk-import-jobs",
        json=body,
        headers={"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-10-15"},
    )
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert {"id", "status", "code", "title", "detail"} <= set(error)
    assert "unknown key 'emial'" in error["detail"] and fake.jobs == {}
