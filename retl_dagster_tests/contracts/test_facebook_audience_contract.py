"""Every customer list body our client sends is one Meta's Business SDK would build: the same
parameters, schema keys and row shape, and the same hashes for the same customers as the SDK's
`CustomAudience.format_params`; where our normalisation differs from the SDK's, the difference
is the documentation's and is named here. The validator accepts the SDK's own output and
refuses shapes the SDK never sends."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from facebook_business.adobjects.customaudience import CustomAudience

from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.facebook import normalize
from retl_dagster.destinations.impl.facebook.audience import FacebookAudienceDestination
from retl_dagster.destinations.impl.facebook.audience_config import FacebookAudienceConfig
from retl_dagster_tests.contracts import facebook_audience as contract
from retl_dagster_tests.fakes.facebook_audience import FakeMetaAudiences

TOKEN, AUDIENCE = "EAAB-token", "23851234567890123"
MADID = "aece52e7-03ee-455a-b3c4-e57283966239"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fake() -> Iterator[FakeMetaAudiences]:
    server = FakeMetaAudiences(TOKEN, {AUDIENCE: "VIP"})
    with server:
        yield server


def test_the_sdks_own_output_conforms() -> None:
    keys = [k for k in contract.multi_keys() if k != "APPUID"]  # app user ids need app_ids
    raw = {
        "EXTERN_ID": "c-1",
        "EMAIL": "Person@Example.com",
        "PHONE": "+1 650 555 1212",
        "GEN": "f",
        "DOBY": "1991",
        "DOBM": "5",
        "DOBD": "26",
        "LN": "Smith",
        "FN": "Mary",
        "FI": "m",
        "CT": "Menlo Park",
        "ST": "ca",
        "ZIP": "94025",
        "MADID": MADID,
        "COUNTRY": "us",
    }
    session = {"session_id": 9, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 1}
    params = CustomAudience.format_params(
        keys, [[raw[k] for k in keys]], is_raw=True, session=session
    )
    assert contract.problems({**params, "access_token": TOKEN}) == []


# Customers whose values Meta's documentation and the SDK normalise alike: ours must hash them
# exactly as the SDK does.
AGREED = [
    ("EMAIL", " John_Smith@gmail.com "),
    ("EMAIL", "Ann.Lee@Example.org."),  # the SDK strips dots at the ends too
    ("PHONE", "+1 (650) 555-1212"),
    ("PHONE", "+44 20 7946 0958"),
    ("GEN", "Female"),
    ("GEN", "m"),
    ("DOBY", "1991"),
    ("DOBM", "5"),
    ("DOBM", "05"),
    ("DOBD", "7"),
    ("LN", "Smith-Jones"),
    ("FN", "Mary"),
    ("FI", "F."),
    ("CT", "Menlo Park"),
    ("CT", "São Paulo"),  # a-z only: both drop the ã
    ("ST", "CA"),
    ("ST", "Ontario"),
    ("ZIP", "94025-1234"),
    ("ZIP", "94025"),
    ("COUNTRY", "US"),
    ("EXTERN_ID", "c-42"),
]


@pytest.mark.parametrize(("key", "raw"), AGREED)
def test_our_values_are_the_sdks_where_the_documentation_agrees(key: str, raw: str) -> None:
    assert normalize.list_value(key, raw) == contract.sdk_value(key, raw)


# (key, raw value, what we hash, why the documentation wins over the SDK)
DEPARTURES = [
    (
        "FN",
        "Valéry",
        "valéry",
        "FN and LN take special characters in UTF-8 (Meta publishes the digest of valéry); the "
        "SDK keeps a-z only (valry)",
    ),
    ("ST", "California", "ca", "a US state is its 2-letter ANSI code; the SDK hashes california"),
    ("ZIP", "SW1A 1AA", "sw1a1aa", "no white space; the SDK keeps the space"),
    (
        "PHONE",
        "0044 20 7946 0958",
        "442079460958",
        "no leading zeros; the SDK keeps the international prefix",
    ),
    ("FI", "Frank", "f", "the first initial; the SDK hashes the whole name"),
]


@pytest.mark.parametrize(("key", "raw", "ours", "why"), DEPARTURES)
def test_where_the_documentation_and_the_sdk_differ_the_documentation_wins(
    key: str, raw: str, ours: str, why: str
) -> None:
    assert normalize.list_value(key, raw) == sha(ours), why
    # Still a difference: if a new SDK agrees, this list must shrink.
    assert contract.sdk_value(key, raw) != sha(ours), why


def test_the_unhashed_keys_and_the_other_differences() -> None:
    # MADID: the table says it needs no hashing (the SDK's multi-key path hashes it anyway).
    assert normalize.list_value("MADID", MADID.upper()) == MADID
    assert contract.sdk_value("MADID", MADID.upper()) == sha(MADID)
    # EXTERN_ID: trimmed with its case (Meta normalises an external id by trimming; AB1 and ab1
    # are two customers); the SDK lower-cases it. Neither hashes it.
    assert normalize.list_value("EXTERN_ID", " AB1 ") == "AB1"
    assert contract.sdk_value("EXTERN_ID", " AB1 ") == "ab1"
    # COUNTRY: an ISO 3166-1 alpha-2 code, else left out; the SDK keeps any two first letters.
    with pytest.raises(ValueError, match="2-letter ISO 3166-1"):
        normalize.list_value("COUNTRY", "United Kingdom")
    assert contract.sdk_value("COUNTRY", "United Kingdom") == sha("un")
    assert contract.unhashed_keys() == {"EXTERN_ID", "MADID"}


def test_every_body_our_client_sends_conforms_and_is_the_sdks(fake: FakeMetaAudiences) -> None:
    config = FacebookAudienceConfig(
        access_token=TOKEN,  # type: ignore[arg-type]
        base_url=fake.url,  # type: ignore[arg-type]
        rows_per_request=2,
    )
    people: list[dict[str, Any]] = [
        {
            "extern_id": "c-1",
            "email": "Mary@Example.com",
            "phone": "+1 650 555 1212",
            "gen": "F",
            "doby": "1991",
            "dobm": "05",
            "dobd": "26",
            "ln": "Smith",
            "fn": "Mary",
            "ct": "Menlo Park",
            "st": "CA",
            "zip": "94025",
            "country": "US",
            "madid": MADID,
        },
        {"email": "bob@example.com", "zip": "10001", "country": "US"},
        {"phone": "+44 20 7946 0958", "fn": "Ann", "ln": "Lee"},
    ]
    records = [Record("added", str(i), p) for i, p in enumerate(people)]
    with FacebookAudienceDestination("meta", config) as dest:
        out = dest.deliver(Batch("s", "20260101T000000Z-x", "mirror", AUDIENCE, records))
        assert out.rejected == {}
        removed = [Record("removed", "0", dest_id=out.dest_ids["0"])]
        assert (
            dest.deliver(Batch("s", "20260101T000000Z-y", "mirror", AUDIENCE, removed)).rejected
            == {}
        )
    assert fake.contract_failures == []
    bodies = [e.body for e in fake.log]
    assert len(bodies) == 3  # two requests of one session, then the removal
    for body in bodies:
        assert contract.problems(body) == []
    # The SDK's own payload for the same customers, from their raw values.
    schema = bodies[0]["payload"]["schema"]
    raw_rows = [[str(p.get(k.lower(), "")) for k in schema] for p in people]
    for body, rows in ((bodies[0], raw_rows[:2]), (bodies[1], raw_rows[2:])):
        sdk = CustomAudience.format_params(schema, rows, is_raw=True, session=body["session"])
        assert sdk["session"] == body["session"]
        assert {k: v for k, v in sdk["payload"].items() if k != "data"} == {
            k: v for k, v in body["payload"].items() if k != "data"
        }
        for sdk_row, our_row in zip(sdk["payload"]["data"], body["payload"]["data"], strict=True):
            for key, theirs, ours in zip(schema, sdk_row, our_row, strict=True):
                if key == "MADID":  # the SDK hashes it; the documentation needs it unhashed
                    assert theirs == sha(ours)
                elif ours == "":
                    # A key the customer lacks is left blank, as the documentation asks; the SDK
                    # hashes the empty string instead (all but EXTERN_ID).
                    assert theirs in ("", sha(""))
                else:
                    assert theirs == ours, key
    assert {(k, v) for k, v in zip(schema, bodies[0]["payload"]["data"][0], strict=True)} >= {
        ("EXTERN_ID", "c-1"),
        ("MADID", MADID),
    }


GOOD: dict[str, Any] = {
    "payload": {"schema": ["EMAIL"], "is_raw": True, "data": [[sha("a@b.co")]]},
    "session": {"session_id": 1, "batch_seq": 1, "last_batch_flag": True},
    "access_token": TOKEN,
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"payload": {**GOOD["payload"], "schema": ["EMAIL_ADDRESS"]}},
            "'EMAIL_ADDRESS' is not a multi-key",
        ),
        (
            {"payload": {**GOOD["payload"], "data": [[sha("a"), sha("b")]]}},
            "Number of keys in each list",
        ),
        ({"payload": {**GOOD["payload"], "is_raw": False}}, "payload.is_raw: must be true"),
        (
            {"payload": {**GOOD["payload"], "hashed": True}},
            "payload.hashed: not a key the SDK builds",
        ),
        ({"session": {"session_id": "1", "batch_seq": 1}}, "session.session_id: must be int"),
        ({"session": {"session_id": 1, "batch_seq": 1, "last": True}}, "session.last: not a key"),
        ({"audience_id": AUDIENCE}, "audience_id: not a parameter of the users endpoint"),
    ],
)
def test_shapes_the_sdk_never_builds_are_refused(
    fake: FakeMetaAudiences, change: dict[str, Any], words: str
) -> None:
    body = {**GOOD, **change}
    found = contract.problems(body)
    assert any(words in p for p in found), found
    # The fake answers as the Graph API does for an invalid parameter: 400, code 100.
    response = httpx.post(f"{fake.url}/v25.0/{AUDIENCE}/users", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == 100
    assert fake.members(AUDIENCE) == set() and len(fake.contract_failures) == 1


def test_unhashed_contact_information_breaks_the_contract_and_is_not_added(
    fake: FakeMetaAudiences,
) -> None:
    body = {**GOOD, "payload": {**GOOD["payload"], "data": [["a@b.co"]]}}
    assert contract.problems(body) == [
        "payload.data[0]: EMAIL: must be a SHA-256 hex digest of the normalised value"
    ]
    answer = httpx.post(f"{fake.url}/v25.0/{AUDIENCE}/users", json=body).json()
    assert (answer["num_received"], answer["num_invalid_entries"]) == (1, 1)
    assert fake.members(AUDIENCE) == set() and len(fake.contract_failures) == 1
