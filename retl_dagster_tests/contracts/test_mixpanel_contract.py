"""Mixpanel contract: what our client sends, next to what the official `mixpanel` SDK sends for
the same people_set / import_data call, both checked by the validator the fake runs on every
request (`contracts/mixpanel.py`). The SDK is captured at its HTTP session (its own Consumer
builds the request: auth, query, body), so nothing goes over the network."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import mixpanel
import pytest
import requests

from retl_dagster.destinations.base import Batch, Op, Record
from retl_dagster.destinations.impl.mixpanel import MixpanelConfig, MixpanelDestination
from retl_dagster_tests.contracts import mixpanel as contract
from retl_dagster_tests.fakes.mixpanel import FakeMixpanel

TOKEN, USER, SECRET, PROJECT = "tok", "sa.user", "sa-secret", "123"
EVENT_TIME = dt.datetime(2026, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
RUN_ID = "20260131T120000Z-contract"


class _Answer:
    def json(self) -> dict[str, Any]:
        return {"status": 1, "error": None}


class _Session:
    """Stands in for the SDK Consumer's requests.Session: keeps each request, prepared exactly
    as requests would put it on the wire."""

    def __init__(self) -> None:
        self.sent: list[requests.PreparedRequest] = []

    def post(self, url: str, **kwargs: Any) -> _Answer:
        prepared = requests.Request(
            "POST", url, params=kwargs.get("params"), data=kwargs["data"], auth=kwargs.get("auth")
        ).prepare()
        self.sent.append(prepared)
        return _Answer()


def sdk_request(call: str) -> requests.PreparedRequest:
    """The request the SDK makes for the same profile update / event as `ours_*` below."""
    consumer = mixpanel.Consumer(
        api_host="api.mixpanel.com",
        credentials=mixpanel.ServiceAccountCredentials(USER, SECRET, PROJECT),
    )
    session = _Session()
    consumer._session = session  # type: ignore[assignment]
    mp = mixpanel.Mixpanel(TOKEN, consumer=consumer)
    if call == "people_set":
        # The docs' way to keep a server's IP out of a profile: `$ip: 0` in the update (meta).
        mp.people_set("user-1", {"plan": "pro"}, meta={"$ip": 0, "$ignore_time": True})
    else:
        mp.import_data(None, "user-1", "Plan Seen", int(EVENT_TIME.timestamp()), {"plan": "pro"})
    [prepared] = session.sent
    return prepared


def body_of(prepared: requests.PreparedRequest) -> bytes:
    body = prepared.body or b""
    return body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> Iterator[FakeMixpanel]:
    server = FakeMixpanel(TOKEN, USER, SECRET, project_id=PROJECT)
    with server:
        yield server


def deliver(fake: FakeMixpanel, mode: str, fields: dict[str, Any]) -> dict[str, str]:
    config = MixpanelConfig(
        project_token=TOKEN,  # type: ignore[arg-type]
        service_account_username=USER,
        service_account_secret=SECRET,  # type: ignore[arg-type]
        project_id=PROJECT,
        base_url=fake.url,  # type: ignore[arg-type]
        backoff_initial_s=0.01,
    )
    op: Op = "event" if mode == "events" else "added"
    record = Record(op=op, key="1", fields=fields, match_value="user-1")
    batch = Batch(
        sync="mp",
        run_id=RUN_ID,
        mode=mode,
        object="Plan Seen" if mode == "events" else "profiles",
        records=[record],
    )
    with MixpanelDestination("mixpanel", config) as dest:
        return dest.deliver(batch).rejected


def test_profile_update_is_the_sdks_people_set(fake: FakeMixpanel) -> None:
    assert deliver(fake, "upsert", {"plan": "pro"}) == {}
    [(path, headers, query, body)] = fake.received
    assert path == "/engage"
    [ours] = contract.engage_updates(headers, body, token=TOKEN)

    sdk = sdk_request("people_set")
    sdk_headers = {k: str(v) for k, v in sdk.headers.items()}
    # The SDK's own request passes the same validator (it posts form `data=`, we post JSON: the
    # reference documents both), so the validator is not stricter than Mixpanel.
    [theirs] = contract.engage_updates(sdk_headers, body_of(sdk), token=TOKEN)
    # Same call, same keys; except that the SDK stamps `$time` (now) on every update, which the
    # reference documents as optional (absent: the time the update arrives). Leaving it out
    # keeps a resent update from being ordered by the moment of a retry.
    assert set(ours) == set(theirs) - {"$time"}
    assert ours["$ip"] == theirs["$ip"] == 0  # no geolocation at our server's IP
    assert ours["$ignore_time"] is True and ours["$set"] == theirs["$set"] == {"plan": "pro"}
    # Auth shape: the project token in the update, no Authorization header, `ip=0` sent too.
    assert ours["$token"] == theirs["$token"] == TOKEN
    assert "authorization" not in headers and "Authorization" not in sdk_headers
    assert query["ip"] == "0" and "ip=0" in body_of(sdk).decode()


def test_import_event_is_the_sdks_import_data(fake: FakeMixpanel) -> None:
    assert deliver(fake, "events", {"time": EVENT_TIME.isoformat(), "plan": "pro"}) == {}
    [(path, headers, query, body)] = fake.received
    assert path == "/import" and query["strict"] == "1"
    [ours] = contract.import_events(
        headers, query, body, user=USER, secret=SECRET, project_id=PROJECT
    )
    assert contract.failed_records([ours]) == []

    sdk = sdk_request("import_data")
    form = dict(parse_qsl(body_of(sdk).decode()))
    theirs = json.loads(form["data"])
    assert contract.failed_records([theirs]) == []
    assert set(ours) == set(theirs) == {"event", "properties"}
    required = {"distinct_id", "time", "$insert_id"}
    assert required <= set(ours["properties"]) and required <= set(theirs["properties"])
    # The time: both a Unix integer for the same instant. The SDK documents seconds; the import
    # reference accepts seconds or milliseconds and its examples use ms: we follow the docs.
    assert isinstance(ours["properties"]["time"], int)
    assert ours["properties"]["time"] == theirs["properties"]["time"] * 1000
    # Auth shape: service-account basic auth and project_id in the query, as the SDK sends them.
    assert headers["authorization"] == sdk.headers["Authorization"]
    assert query["project_id"] == PROJECT and f"project_id={PROJECT}" in (sdk.url or "")
    # Docs vs SDK: the SDK posts one event as form field `data=`; the import reference takes a
    # JSON (or ndjson) array, gzip allowed. We follow the docs, and so does the validator:
    sdk_headers = {k.lower(): str(v) for k, v in sdk.headers.items()}
    with pytest.raises(contract.Refused, match="Content-Type"):
        contract.import_events(
            sdk_headers, {"project_id": PROJECT}, body_of(sdk), user=USER, secret=SECRET
        )


def test_unmapped_time_is_the_run_start_in_ms(fake: FakeMixpanel) -> None:
    assert deliver(fake, "events", {"plan": "pro"}) == {}
    [event] = fake.events.values()
    run_start = dt.datetime(2026, 1, 31, 12, 0, 0, tzinfo=dt.UTC)
    assert event["properties"]["time"] == int(run_start.timestamp()) * 1000


def test_a_bad_time_rejects_its_row_only(fake: FakeMixpanel) -> None:
    rejected = deliver(fake, "events", {"time": "next tuesday", "plan": "pro"})
    assert rejected["1"].startswith("time: event time 'next tuesday' is not a timestamp")
    assert fake.received == []  # nothing to send for a batch of one bad row


def test_validator_rejects_the_old_iso_time() -> None:
    """The shape we used to send (ISO text in `time`) and the one the SDK's own serializer writes
    for a datetime: /import?strict=1 lists both in failed_records."""
    for bad in (EVENT_TIME.isoformat(), EVENT_TIME.strftime("%Y-%m-%dT%H:%M:%S")):
        event = {
            "event": "Plan Seen",
            "properties": {"time": bad, "distinct_id": "user-1", "$insert_id": "abc-1"},
        }
        [failed] = contract.failed_records([event])
        assert failed["field"] == "properties.time" and failed["insert_id"] == "abc-1"


def test_fake_answers_a_bad_time_with_failed_records(fake: FakeMixpanel) -> None:
    events: list[dict[str, Any]] = [
        {"event": "A", "properties": {"time": t, "distinct_id": "u", "$insert_id": f"id-{i}"}}
        for i, t in enumerate([EVENT_TIME.isoformat(), int(EVENT_TIME.timestamp() * 1000)])
    ]
    response = requests.post(
        f"{fake.url}/import",
        params={"strict": "1", "project_id": PROJECT},
        json=events,
        auth=(USER, SECRET),
        timeout=5,
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["num_records_imported"] == 1
    assert [(f["index"], f["field"]) for f in answer["failed_records"]] == [(0, "properties.time")]
