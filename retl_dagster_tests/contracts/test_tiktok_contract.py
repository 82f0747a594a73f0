"""What our TikTok clients send and what the fake answers, held to TikTok's own Python SDK
(`tiktok-business-api-sdk`): its models accept their own output and refuse the shapes they do
not model; the codes the fake answers and the client acts on are the SDK's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from business_api_client.api_client import ApiClient
from business_api_client.models import (
    PixelContent,
    PixelContextPage,
    PixelContextUser,
    PixelProperties,
)
from business_api_client.tiktok_business.tiktok_code import NumericErrorCodes

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.tiktok import TikTokAudienceDestination, client
from retl_dagster_tests.contracts import tiktok as contract
from retl_dagster_tests.fakes import tiktok as fake_api
from retl_dagster_tests.fakes.tiktok import Audience, FakeTikTok

TOKEN, PIXEL, ADVERTISER, AUDIENCE = "tt-token", "C4PIXEL", "7012345678", "1800123"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compact(model: Any) -> dict[str, Any]:
    """An SDK model as it goes on the wire: its dict without the fields left unset."""
    out = {}
    for key, value in model.to_dict().items():
        if isinstance(value, list):
            value = [{k: v for k, v in x.items() if v is not None} for x in value]
        if value is not None:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTikTok]:
    fake = FakeTikTok(TOKEN)
    with fake:
        yield fake


@pytest.fixture
def fake(server: FakeTikTok) -> FakeTikTok:
    server.reset(event_sources={("web", PIXEL)}, advertiser_id=ADVERTISER)
    server.audiences[AUDIENCE] = Audience(AUDIENCE, "VIP", "EMAIL_SHA256")
    return server


def sdk_event() -> dict[str, Any]:
    """An event whose objects the SDK itself builds."""
    properties = PixelProperties(
        contents=[PixelContent(content_id="sku-1", price=12.5, quantity=2, content_name="Tee")],
        currency="USD",
        value=25.0,
        query="tees",
    )
    user = PixelContextUser(email=sha("a@example.com"), external_id=sha("U1"), ttp="2F7h37")
    return {
        "event": "CompletePayment",
        "event_time": 1_767_225_600,
        "event_id": "e-1",
        "user": compact(user),
        "properties": compact(properties),
        "page": compact(PixelContextPage(url="https://shop.example/", referrer="https://t.co")),
    }


def body(*events: dict[str, Any]) -> dict[str, Any]:
    return {"event_source": "web", "event_source_id": PIXEL, "data": list(events)}


def test_the_sdks_own_objects_conform() -> None:
    assert contract.event_problems(body(sdk_event())) == []


def test_shapes_the_sdk_does_not_model_are_refused() -> None:
    wrong = sdk_event()
    wrong["properties"]["contents"][0]["price"] = "12.50"  # PixelContent.price is a float
    wrong["user"]["phone_number"] = sha("+16505551212")  # 1.0's name; 2.0 says phone
    wrong["timestamp"] = "2026-01-01T00:00:00Z"  # 1.0's time; 2.0 says event_time
    assert contract.event_problems(body(wrong) | {"pixel_code": PIXEL}) == [
        "pixel_code: not a field of the request",
        "data[0].timestamp: not an event field",
        "data[0].user.phone_number: not a field",
        "data[0].properties.contents[0].price: must be float",
    ]


def test_every_event_our_client_sends_conforms(fake: FakeTikTok) -> None:
    fields = {
        "email": "a@example.com",
        "phone": "+1 650 555 1212",
        "external_id": "U1",
        "ttclid": "E.C.P.x",
        "ttp": "2F7h37",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "locale": "en-US",
        "lead_id": "L1",
        "url": "https://shop.example/",
        "referrer": "https://t.co/",
        "value": 25,
        "currency": "usd",
        "content_type": "product",
        "order_id": "o-1",
        "contents": [{"content_id": "sku-1", "price": 12.5, "quantity": 2}],
        "limited_data_use": False,
        "custom_tier": "gold",
    }
    config = {"access_token": TOKEN, "event_source_id": PIXEL, "base_url": fake.url}
    with build_destination("tt", "tiktok_events", config | {"test_event_code": "T1"}) as dest:
        out = dest.deliver(
            Batch("s", "20260101T000000Z", "events", "Lead", [Record("event", "1", fields)])
        )
    assert out.rejected == {} and len(fake.test_events) == 1
    assert fake.contract_failures == []
    assert set(fake.test_events[0]["user"]) == set(contract.user_types()) - {"idfa", "idfv", "gaid"}


def test_the_codes_are_tiktoks_own() -> None:
    sdk = contract.known_codes()
    assert {name: sdk[name] for name in fake_api.CODES} == fake_api.CODES
    assert client.OK == NumericErrorCodes.ERROR_CODE_OK
    assert client.PERMISSION_ERROR == NumericErrorCodes.ERROR_CODE_PERMISSION_ERROR
    assert client.PARAM_ERROR == NumericErrorCodes.ERROR_CODE_PARAM_ERROR
    assert client.PII_NOT_HASHED == NumericErrorCodes.ERROR_CODE_PII_NOT_HASHED
    throttled = {
        NumericErrorCodes.ERROR_CODE_REQUEST_TOO_FREQUENT,
        NumericErrorCodes.ERROR_CODE_REQUEST_FREQUENCY_LIMITED,
    }
    token_refused = {
        NumericErrorCodes.ERROR_CODE_ACCESS_TOKEN_EXPIRE,
        NumericErrorCodes.ERROR_CODE_EMPTY_ACCESS_TOKEN,
        NumericErrorCodes.ERROR_CODE_INVALID_ACCESS_TOKEN,
        NumericErrorCodes.ERROR_CODE_INVALID_CORE_USER,
    }
    assert (throttled, token_refused) == (client.THROTTLED, client.TOKEN_REFUSED)
    assert client.SYSTEM_ERRORS_FROM == NumericErrorCodes.ERROR_CODE_SYS_ERROR


def test_audience_requests_go_as_the_sdk_sends_them(fake: FakeTikTok) -> None:
    config = {"access_token": TOKEN, "advertiser_id": ADVERTISER, "base_url": fake.url}
    with build_destination("vip", "tiktok_audience", config) as dest:
        assert isinstance(dest, TikTokAudienceDestination)
        dest.api.http.exchanges = []
        dest.prepare(AUDIENCE, None, {"email": "VARCHAR"}, None)
        record = Record("added", "1", {"email": "a@example.com"})
        out = dest.deliver(Batch("s", "20260101T000000Z", "upsert", AUDIENCE, [record]))
        [get, *_] = dest.api.http.exchanges
    assert out.rejected == {} and fake.contract_failures == []
    # A GET's array parameter: JSON, as the SDK's ApiClient puts it in the query.
    sdk = dict(
        ApiClient().parameters_to_tuples(
            [("custom_audience_ids", [AUDIENCE])], {"custom_audience_ids": "multi"}
        )
    )
    assert get.request.url.params["custom_audience_ids"] == sdk["custom_audience_ids"]
    # CustomAudienceUpdateBody's rules, held by hand (the SDK on PyPI has no DMP models).
    sent = {"advertiser_id": ADVERTISER, "custom_audience_id": AUDIENCE, "file_paths": ["p"]}
    assert contract.update_problems(sent | {"action": "APPEND"}) == []
    assert contract.update_problems(sent | {"action": "DELETE"}) == [
        "action: must be one of APPEND, REMOVE, REPLACE"
    ]
    assert contract.update_problems({"custom_audience_id": AUDIENCE}) == [
        "advertiser_id: required",
        "one of file_paths or custom_audience_name is required",
    ]


def test_every_answer_fits_the_sdks_envelope(fake: FakeTikTok) -> None:
    config = {"access_token": TOKEN, "advertiser_id": ADVERTISER, "base_url": fake.url}
    with build_destination("vip", "tiktok_audience", config) as dest:
        dest.check(AUDIENCE)
    assert fake.answers and all(contract.envelope_problems(a) == [] for a in fake.answers)
    assert contract.envelope_problems({"code": "0", "message": "OK"}) == [
        "answer.code: must be int",
        "answer.request_id: missing",
    ]
