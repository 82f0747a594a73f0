"""Customer.io contract: the request our client sends next to the one the official `customerio`
SDK's Track client sends for the same operations (`CustomerIO.batch`, its HTTP session swapped
for a recorder), and the v2 operation rules (contracts/customerio.py) refusing wrong bodies."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from customerio import CustomerIO

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.customerio import CustomerIOConfig, CustomerIODestination
from retl_dagster_tests.contracts.customerio import ContractError, check_request
from retl_dagster_tests.fakes.customerio import FakeCustomerIO

SITE, KEY = "site_contract", "key_contract"
RUN_ID = "20260131T120000Z-contract"


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.auth: Any = None

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, "url": url, **kwargs})
        ok = requests.Response()
        ok.status_code = 200
        return ok


@pytest.fixture
def fake() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO(SITE, KEY) as server:
        yield server  # type: ignore[misc]


def ours(fake: FakeCustomerIO, mode: str, object_: str | None, records: list[Record]) -> Any:
    config = CustomerIOConfig(site_id=SITE, api_key=KEY, base_url=fake.url)  # type: ignore[arg-type]
    with CustomerIODestination("cio", config) as dest:
        dest.deliver(Batch("c", RUN_ID, mode, object_, records, match_field="email"))
    [logged] = [e for e in fake.log if e.path == "/api/v2/batch"]
    return logged


def sdk(operations: list[dict[str, Any]]) -> dict[str, Any]:
    client = CustomerIO(site_id=SITE, api_key=KEY)
    recorder = _Recorder()
    recorder.auth = (SITE, KEY)
    client._current_session = recorder  # the SDK's pooled session (ClientBase.http)
    client.batch(operations)
    [sent] = recorder.sent
    return sent


RECORDS = [
    Record("upsert", "1", {"plan": "pro", "seats": 3}, match_value="a@example.com"),
    Record("removed", "2", {}, match_value="b@example.com"),
]


@pytest.mark.parametrize("mode", ["upsert", "events"])
def test_our_batch_is_the_request_the_sdk_sends(fake: FakeCustomerIO, mode: str) -> None:
    object_ = "plan_checked" if mode == "events" else "people"
    records = [
        *RECORDS,
        Record("added", "3", {"timestamp": "2026-01-15T10:00:00Z"}, match_value="c@example.com"),
    ]
    logged = ours(fake, mode, object_, records)
    assert logged.status == 200 and fake.contract_errors == []
    sent = sdk(logged.body["batch"])
    assert sent["method"] == logged.method == "POST"
    assert sent["url"] == "https://track.customer.io/api/v2/batch"
    assert sent["url"].endswith(logged.path)
    assert sent["json"] == logged.body  # the SDK's sanitised envelope equals our body
    if mode == "events":
        ev = logged.body["batch"][-1]
        assert ev["timestamp"] == int(dt.datetime(2026, 1, 15, 10, tzinfo=dt.UTC).timestamp())
        assert {op["action"] for op in logged.body["batch"]} == {"event"}  # removed rows skipped
    else:
        assert [op["action"] for op in logged.body["batch"]] == ["identify", "delete", "identify"]


def test_our_auth_is_the_sdks_basic_auth(fake: FakeCustomerIO) -> None:
    # The SDK sets `session.auth = (site_id, api_key)`: requests' HTTP basic; the fake checks
    # the same header on every request and our run got through it.
    assert fake.url and ours(fake, "upsert", None, RECORDS[:1]).status == 200
    want = base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    session = CustomerIO(site_id=SITE, api_key=KEY)._build_session()
    prepared = session.prepare_request(requests.Request("POST", "https://x/api/v2/batch"))
    assert prepared.headers["Authorization"] == f"Basic {want}"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda op: op.update(identifiers={"phone": "+1555"}), "identifiers must be exactly one"),
        (lambda op: op.update(identifiers={"id": 7}), "must be a string"),
        (lambda op: op.update(action="upsert"), "is not a person action"),
        (lambda op: op.update(action="event"), "an event needs a name"),
        (lambda op: op.update(timestamp="2026-01-01"), "unix seconds"),
        (lambda op: op.update(id="not-a-ulid"), "is not a ULID"),
        (lambda op: op.update(traits={}), "unknown key 'traits'"),
    ],
)
def test_the_check_refuses_a_wrong_operation(change: Any, problem: str) -> None:
    op: dict[str, Any] = {
        "type": "person",
        "action": "identify",
        "identifiers": {"email": "a@example.com"},
        "attributes": {},
    }
    check_request({"batch": [json.loads(json.dumps(op))]})  # the right one passes
    change(op)
    with pytest.raises(ContractError, match=problem):
        check_request({"batch": [op]})
