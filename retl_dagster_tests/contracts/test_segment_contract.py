"""Segment contract: what our client sends, next to what the official SDK
(`segment-analytics-python`, package `segment.analytics`) sends for the same identify and track
calls, both checked by the validator the fake runs on every request (`contracts/segment.py`).
The SDK's calls come from `Client(send=False)` (it returns each call it would queue) and its
request from `segment.analytics.request.post` with its HTTP session swapped for a recorder, so
nothing goes over the network."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import segment.analytics.consumer as sdk_consumer
import segment.analytics.request as sdk_request
from segment.analytics.client import Client

from retl_dagster.destinations.base import Batch, Op, Record
from retl_dagster.destinations.impl.segment import SegmentConfig, SegmentDestination
from retl_dagster.destinations.impl.segment import client as our_client
from retl_dagster_tests.contracts import segment as contract
from retl_dagster_tests.fakes.segment import FakeSegment

KEY = "wk_contract"
EVENT_TIME = dt.datetime(2026, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
RUN_START = dt.datetime(2026, 1, 31, 12, 0, 0, tzinfo=dt.UTC)
RUN_ID = "20260131T120000Z-contract"


class _Recorder:
    """Stands in for the SDK's requests session."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> Any:
        self.sent.append({"url": url, **kwargs})
        ok = requests.Response()
        ok.status_code = 200
        return ok


def sdk_call(kind: str) -> dict[str, Any]:
    client = Client(KEY, send=False)
    traits = {"email": "u1@example.com", "plan": "pro"}
    if kind == "identify":
        _, msg = client.identify("u-1", traits, timestamp=EVENT_TIME, message_id="m-1")
    else:
        _, msg = client.track("u-1", "Plan Checked", traits, timestamp=EVENT_TIME, message_id="m-1")
    return dict(msg)


def sdk_post(calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    recorder = _Recorder()
    monkeypatch.setattr(sdk_request, "_session", recorder)
    sdk_request.post(KEY, host="https://api.segment.io", batch=calls)
    [sent] = recorder.sent
    return sent


@pytest.fixture
def fake() -> Iterator[FakeSegment]:
    server = FakeSegment(KEY)
    with server:
        yield server


def deliver(fake: FakeSegment, mode: str, fields: list[dict[str, Any]]) -> dict[str, str]:
    config = SegmentConfig(
        write_key=KEY,  # type: ignore[arg-type]
        base_url=fake.url,  # type: ignore[arg-type]
        backoff_initial_s=0.01,
        batch_size=2500,
    )
    op: Op = "event" if mode == "events" else "added"
    records = [
        Record(op=op, key=str(i), fields=f, match_value=f"u-{i + 1}") for i, f in enumerate(fields)
    ]
    object_ = "Plan Checked" if mode == "events" else "identify"
    batch = Batch(
        sync="seg", run_id=RUN_ID, mode=mode, object=object_, records=records, match_field="userId"
    )
    with SegmentDestination("segment", config) as dest:
        return dest.deliver(batch).rejected


def ours_received(fake: FakeSegment) -> tuple[dict[str, str], list[dict[str, Any]]]:
    [(headers, body)] = fake.received
    return headers, contract.batch_calls(headers, body, write_key=KEY)


@pytest.mark.parametrize(
    ("mode", "kind", "payload"),
    [("upsert", "identify", "traits"), ("events", "track", "properties")],
)
def test_calls_are_the_sdks_calls(
    fake: FakeSegment, monkeypatch: pytest.MonkeyPatch, mode: str, kind: str, payload: str
) -> None:
    fields = {"email": "u1@example.com", "plan": "pro", "timestamp": EVENT_TIME.isoformat()}
    assert deliver(fake, mode, [fields]) == {}
    headers, [ours] = ours_received(fake)
    theirs = sdk_call(kind)
    sent = sdk_post([theirs], monkeypatch)
    # The SDK's own request passes the validator: it is not stricter than Segment.
    assert contract.batch_calls(sent["headers"], sent["data"].encode(), write_key=KEY)

    # Same call, same top-level keys; the SDK also sends an empty `integrations` and a null
    # `anonymousId`, both optional in the reference.
    assert set(ours) == {k for k, v in theirs.items() if v is not None} - {"integrations"}
    assert ours["type"] == theirs["type"] == kind
    # The mapped time is the call's own timestamp, in the SDK's exact format; not a property.
    assert ours["timestamp"] == theirs["timestamp"] == "2026-01-15T10:00:00.000+00:00"
    assert ours[payload] == theirs[payload] == {"email": "u1@example.com", "plan": "pro"}
    # Auth shape: the write key as the basic-auth user with an empty password, as the SDK does.
    # (The SDK also puts `writeKey` and `sentAt` in the body; the reference makes both optional.)
    assert headers["authorization"] == sent["headers"]["Authorization"]
    assert headers["content-type"] == sent["headers"]["Content-Type"] == "application/json"


def test_unmapped_timestamp_is_the_run_start(fake: FakeSegment) -> None:
    assert deliver(fake, "events", [{"plan": "pro"}]) == {}
    _, [call] = ours_received(fake)
    assert call["timestamp"] == RUN_START.isoformat(timespec="milliseconds")


def test_a_bad_timestamp_rejects_its_row_only(fake: FakeSegment) -> None:
    rejected = deliver(fake, "events", [{"timestamp": "soon"}, {"plan": "pro"}])
    assert list(rejected) == ["0"] and "is not a timestamp" in rejected["0"]
    assert len(fake.of_type("track")) == 1


def test_batches_stay_under_the_sdks_limit(fake: FakeSegment) -> None:
    assert our_client.MAX_BATCH_BYTES == sdk_consumer.BATCH_SIZE_LIMIT == 475_000
    assert our_client.MAX_CALL_BYTES == sdk_consumer.MAX_MSG_SIZE
    assert deliver(fake, "events", [{"blob": "x" * 3000} for _ in range(400)]) == {}
    sizes = [len(body) for _, body in fake.received]
    assert len(sizes) >= 3 and max(sizes) <= sdk_consumer.BATCH_SIZE_LIMIT
    assert len(fake.of_type("track")) == 400


def call(**extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "E", "userId": "u", "messageId": "m", **extra}


def test_validator_rejects_the_old_and_the_oversized() -> None:
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + "d2tfY29udHJhY3Q6"}

    def refusal(calls: list[dict[str, Any]]) -> str:
        with pytest.raises(contract.Refused) as refused:
            contract.batch_calls(headers, json.dumps({"batch": calls}).encode(), write_key=KEY)
        assert refused.value.status == 400
        return str(refused.value.body["message"])

    assert "ISO 8601" in refusal([call(timestamp="15/01/2026 10:00")])
    assert "ISO 8601" in refusal([call(timestamp=1768471200)])
    assert "32KB" in refusal([call(properties={"x": "y" * 33_000})])
    assert "500KB" in refusal([call(properties={"x": "y" * 30_000}) for _ in range(17)])
    # The old shape our client sent: the mapped time among the properties and the call stamped
    # with the time of sending. Segment takes it, so the contract test above is what catches it:
    old = call(timestamp="2026-11-29T15:00:00.000+00:00", properties={"timestamp": "2026-01-15"})
    assert contract.batch_calls(headers, json.dumps({"batch": [old]}).encode(), write_key=KEY)


def test_fake_refuses_over_500kb_and_bad_timestamps(fake: FakeSegment) -> None:
    def post(calls: list[dict[str, Any]]) -> requests.Response:
        return requests.post(
            f"{fake.url}/v1/batch", json={"batch": calls}, auth=(KEY, ""), timeout=5
        )

    assert post([call(properties={"x": "y" * 30_000}) for _ in range(17)]).status_code == 400
    assert post([call(timestamp="yesterday")]).status_code == 400
    assert post([call(properties={"x": "y" * 40_000})]).status_code == 400
    assert post([call(timestamp="2026-01-15T10:00:00Z")]).status_code == 200
    assert list(fake.calls) == ["m"]
