"""HubSpot's request models (hubspot-api-client) against the bodies our client builds.

HubSpot's docs and its SDK agree on the shape checked here: the SDK types every property value
as a string, and the docs' batch examples show numbers, checkboxes and dates as strings
("17", "false", "1572480000000"). What the SDK cannot say is *which* string a date or datetime
property takes; that follows the docs (Unix milliseconds, midnight UTC for a date).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from retl_dagster.destinations.base import Batch, DestinationConfigError, Record
from retl_dagster.destinations.impl.hubspot import HubSpotConfig, HubSpotDestination
from retl_dagster.destinations.impl.hubspot.client import property_value
from retl_dagster_tests.contracts.hubspot import ContractError, check_batch_request
from retl_dagster_tests.fakes.hubspot import FakeHubSpot

TOKEN = "pat-na1-contract"


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    server = FakeHubSpot(TOKEN)
    with server:
        yield server


def _destination(fake: FakeHubSpot) -> HubSpotDestination:
    config = HubSpotConfig(token=TOKEN, base_url=fake.url)  # type: ignore[arg-type]
    return HubSpotDestination("hubspot", config)


def _batch(mode: str, records: list[Record]) -> Batch:
    return Batch("contacts", "20260101T000000Z", mode, "contacts", records, match_field="email")


def _upsert(properties: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [{"id": "a@example.com", "idProperty": "email", "properties": properties}]}


# -- the validator accepts what the client sends, in every mode ---------------------------------
@pytest.mark.parametrize("mode", ["insert", "update", "upsert", "mirror"])
def test_every_body_the_client_sends_fits_hubspots_models(fake: FakeHubSpot, mode: str) -> None:
    fake.objects["contacts"]["5"] = {"email": "old@example.com"}
    fields = {
        "email": "a@example.com",
        "ltv": 1234.5,
        "newsletter": True,
        "company": None,
        "city": "Lyon",
    }
    records = [
        Record("added", "1", fields, match_value="a@example.com", dest_id="5"),
        Record("removed", "2", match_value="old@example.com"),
    ]
    with _destination(fake) as dest:
        dest.prepare("contacts", "email", {k: "VARCHAR" for k in fields}, "VARCHAR")
        dest.deliver(_batch(mode, records))
    assert fake.contract_errors == []
    sent = [e for e in fake.log if "/batch/" in e.path]
    assert sent and all(e.status != 400 for e in sent)
    for entry in sent:
        action = entry.path.rsplit("/", 1)[1]
        check_batch_request("contacts", action, entry.body)  # as the fake did


def test_property_values_are_hubspots_documented_strings() -> None:
    assert property_value(12) == "12"
    assert property_value(1234.5) == "1234.5"
    assert property_value(1e20) == "100000000000000000000"  # no exponent
    assert property_value(Decimal("12345678901234567.89")) == "12345678901234567.89"
    assert property_value("12345678901234567.89") == "12345678901234567.89"
    assert (property_value(True), property_value(False)) == ("true", "false")
    assert property_value(None) == ""  # clears the property
    assert property_value("2015-05-01", "date") == "1430438400000"
    assert property_value("2015-04-02T18:02:46", "datetime") == "1427997766000"
    assert property_value("2015-04-02T20:02:46+02:00", "datetime") == "1427997766000"
    assert property_value(dt.date(2015, 5, 1).isoformat(), "date") == "1430438400000"
    with pytest.raises(TypeError):
        property_value({"street": "1 Main St"})


def test_an_object_or_array_mapping_is_refused_before_sending(fake: FakeHubSpot) -> None:
    with _destination(fake) as dest, pytest.raises(DestinationConfigError) as info:
        dest.prepare(
            "contacts",
            "email",
            {"email": "VARCHAR", "city": "JSON", "tags": "VARCHAR[]"},
            "VARCHAR",
        )
    assert str(info.value).startswith("destination 'hubspot', field 'mappings[2]': 'city'")
    assert "Fix:" in str(info.value)
    assert fake.log == []


# -- the validator can fail: the old buggy shapes are refused -----------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234.5, "expected a string, got float"),  # the old JSON number
        (7, "expected a string, got int"),
        (True, "expected a string, got bool"),
        ({"street": "1 Main St"}, "expected a string, got dict"),  # a customize-object mapping
        (None, "expected a string, got NoneType"),
    ],
)
def test_a_non_string_property_value_is_refused(value: Any, expected: str) -> None:
    with pytest.raises(ContractError, match=expected):
        check_batch_request("contacts", "upsert", _upsert({"ltv": value}))


def test_unknown_keys_missing_fields_and_the_old_read_body_are_refused() -> None:
    with pytest.raises(ContractError, match="unknown key 'idProprety'"):
        check_batch_request(
            "contacts", "upsert", {"inputs": [{"id": "x", "idProprety": "email", "properties": {}}]}
        )
    with pytest.raises(ContractError, match="`id`, must not be `None`"):
        check_batch_request("deals", "update", {"inputs": [{"properties": {"amount": "1"}}]})
    old_read = {"idProperty": "email", "properties": ["email"], "inputs": [{"id": "a@b.co"}]}
    with pytest.raises(ContractError, match="properties_with_history"):
        check_batch_request("contacts", "read", old_read)
    with pytest.raises(ContractError, match="expected a string, got int"):
        check_batch_request("widgets", "archive", {"inputs": [{"id": 12}]})  # custom object


def test_the_fake_answers_a_refused_body_with_hubspots_validation_error(fake: FakeHubSpot) -> None:
    response = httpx.post(
        f"{fake.url}/crm/v3/objects/contacts/batch/upsert",
        json=_upsert({"email": "a@example.com", "ltv": 1234.5}),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error"
    assert "properties.ltv: expected a string" in body["message"]
    assert fake.objects["contacts"] == {}  # nothing written
