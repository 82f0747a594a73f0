"""Salesforce Marketing Cloud: data extension rows upserted, inserted and deleted by primary key,
against a fake tenant (auth server, REST and SOAP APIs over loopback) that holds the API
reference's rules (Salesforce publishes no SDK or schema of these bodies)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from retl_dagster.destinations import build_destination
from retl_dagster.destinations.base import (
    AnyDestination,
    Batch,
    DestinationConfigError,
    DestinationError,
    Record,
)
from retl_dagster.destinations.http import format_exchange
from retl_dagster.destinations.impl.sfmc import client as sfmc_client
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.sfmc import DataExtension, FakeSfmc, Field
from retl_dagster_tests.harness import defs_from_yaml, sql

SECRET = "s3cr3t-client-secret-value"
MID = "100012345"


@pytest.fixture
def fake() -> Iterator[FakeSfmc]:
    server = FakeSfmc("cid-123", SECRET, accounts=(MID,))
    server.add(
        "Customers",
        CustomerID=Field("Number", primary_key=True),
        Email=Field("EmailAddress", required=True, max_length=254),
        FirstName=Field("Text", max_length=20),
        Plan=Field("Text", max_length=50),
        Score=Field("Decimal"),
    )
    with server:
        yield server
    assert server.refused == []  # no body our client sent was refused whole


def customers(fake: FakeSfmc) -> DataExtension:
    return fake.data_extensions["Customers"]


def destination(fake: FakeSfmc, **options: Any) -> AnyDestination:
    config = {
        "auth_base_url": fake.url,
        "client_id": "cid-123",
        "client_secret": SECRET,
        "account_id": MID,
        "poll_interval_s": 0.01,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 2,
        **options,
    }
    dest = build_destination("mc", "sfmc", config)
    return dest


def prepared(fake: FakeSfmc, **options: Any) -> AnyDestination:
    dest = destination(fake, **options)
    dest.prepare("Customers", "CustomerID", {"Email": "VARCHAR", "Plan": "VARCHAR"}, "BIGINT")
    return dest


def row(i: int, op: str = "added", **fields: Any) -> Record:
    values = {"Email": f"u{i}@example.com", "Plan": "pro", **fields}
    return Record(op, str(i), {} if op == "removed" else values, match_value=i)  # type: ignore[arg-type]


def batch(records: list[Record], mode: str = "upsert") -> Batch:
    return Batch("to_mc", "run-1", mode, "Customers", records, match_field="CustomerID")


def test_rows_are_upserted_by_primary_key_with_one_token(fake: FakeSfmc) -> None:
    fake.job_polls = 2  # Pending twice: the client waits for the request
    with prepared(fake) as dest:
        out = dest.deliver(batch([row(i) for i in range(1, 4)]))
        assert out.rejected == {}
        out = dest.deliver(batch([row(2, "changed", Plan="free"), row(4)]))
        assert out.rejected == {}
    de = customers(fake)
    assert len(de.rows) == 4 and de.row(CustomerID=2) == {
        "Email": "u2@example.com",
        "Plan": "free",
        "CustomerID": 2,
    }
    assert fake.count("/rows", 202) == 2 and all(
        e.method == "PUT" for e in fake.log if "/rows" in e.path
    )
    # One token for the whole run, asked for the business unit, its secret never logged.
    assert fake.token_requests == [
        {"grant_type": "client_credentials", "client_id": "cid-123", "account_id": MID}
    ]


@pytest.mark.parametrize("every_row", [False, True], ids=["errors-only", "every-row"])
def test_rows_sfmc_refuses_are_rejected_with_its_message(fake: FakeSfmc, every_row: bool) -> None:
    fake.results_list_every_row = every_row
    records = [row(i) for i in range(1, 9)]
    records[2] = row(3, Email="not-an-email")
    records[5] = row(6, Score="lots")
    with prepared(fake) as dest:
        out = dest.deliver(batch(records))
    assert out.rejected == {
        "3": "UnexpectedError: Invalid email address 'not-an-email' for column 'Email'.",
        "6": "UnexpectedError: Error converting data type nvarchar 'lots' to numeric.",
    }
    assert set(customers(fake).rows) == {(str(i),) for i in (1, 2, 4, 5, 7, 8)}
    # Results that list every row name the failed ones by position: one request. Results that
    # list only the failures (as the reference's example) without naming the row: the upsert
    # is halved and resent until they are alone.
    assert (fake.count("/rows", 202) == 1) is every_row


def test_insert_refuses_an_existing_key_by_its_own_message(fake: FakeSfmc) -> None:
    customers(fake).rows[("2",)] = {"CustomerID": 2, "Email": "old@example.com"}
    with prepared(fake) as dest:
        out = dest.deliver(batch([row(1), row(2), row(3)], mode="insert"))
    assert list(out.rejected) == ["2"]
    assert out.rejected["2"].startswith("UnexpectedError: Violation of PRIMARY KEY constraint")
    assert "The duplicate key value is (2)" in out.rejected["2"]
    assert customers(fake).row(CustomerID=2) == {"CustomerID": 2, "Email": "old@example.com"}
    assert len(customers(fake).rows) == 3 and fake.count("/rows", 202) == 1  # never resent
    assert all(e.method == "POST" for e in fake.log if "/rows" in e.path)


def test_an_insert_failure_naming_no_row_rejects_its_request_unsent_again(fake: FakeSfmc) -> None:
    with prepared(fake) as dest:
        out = dest.deliver(batch([row(1), row(2, Email="nope"), row(3)], mode="insert"))
    assert set(out.rejected) == {"1", "2", "3"} and fake.count("/rows", 202) == 1
    assert "Invalid email address 'nope'" in out.rejected["1"]
    assert "without naming them, so none is marked synced" in out.rejected["1"]


def test_removed_rows_are_deleted_by_primary_key_50_a_call(fake: FakeSfmc) -> None:
    de = customers(fake)
    for i in range(1, 131):
        de.rows[(str(i),)] = {"CustomerID": i, "Email": f"u{i}@example.com"}
    with prepared(fake) as dest:
        out = dest.deliver(batch([row(i, "removed") for i in range(1, 121)], mode="mirror"))
    assert out.rejected == {}
    assert sorted(int(k[0]) for k in de.rows) == list(range(121, 131))
    assert fake.delete_sizes == [50, 50, 20]


def test_an_expired_token_is_renewed_for_rest_and_soap(fake: FakeSfmc) -> None:
    with prepared(fake) as dest:
        fake.expire_tokens()  # refused now: REST answers 401, SOAP a Security fault
        assert dest.deliver(batch([row(1)])).rejected == {}
        fake.expire_tokens()
        assert dest.deliver(batch([row(1, "removed")], mode="mirror")).rejected == {}
        assert len(fake.token_requests) == 3
        assert fake.count("/rows", 401) == 1 and customers(fake).rows == {}


def test_a_token_is_renewed_before_its_expiry(fake: FakeSfmc) -> None:
    fake.token_lifetime_s = 61  # renewed 60 s early: usable for one second
    with prepared(fake) as dest:
        dest.deliver(batch([row(1)]))
        before = len(fake.token_requests)
        time.sleep(1.05)
        assert dest.deliver(batch([row(2)])).rejected == {}
    assert len(fake.token_requests) == before + 1
    assert all(e.status != 401 for e in fake.log)  # renewed before Marketing Cloud refused it


def test_kept_exchanges_never_show_a_token(fake: FakeSfmc) -> None:
    """`retl test-row` prints the requests and answers: no access token in them."""
    with prepared(fake) as dest:
        dest.client.exchanges = []  # type: ignore[attr-defined]
        fake.expire_tokens()  # a token request among the kept exchanges
        assert dest.deliver(batch([row(5, "removed")], mode="mirror")).rejected == {}
        shown = "\n".join(
            format_exchange(r, lambda s: s)
            for r in dest.client.exchanges  # type: ignore[attr-defined]
        )
    assert "fueloauth" in shown and "access_token" in shown and "Delete" in shown
    assert not any(token in shown for token in dest.issued)  # type: ignore[attr-defined]
    assert len(dest.issued) == 2  # type: ignore[attr-defined]


def test_wrong_credentials_fail_clearly_without_the_secret(fake: FakeSfmc) -> None:
    with (
        destination(fake, client_secret="wrong-secret-value") as dest,
        pytest.raises(DestinationError, match="refused the token request") as info,
    ):
        dest.check()
    said = str(info.value)
    assert "Client authentication failed. (invalid_client)" in said and "Fix:" in said
    assert "wrong-secret-value" not in said and SECRET not in said
    with (
        destination(fake, account_id="999") as dest,
        pytest.raises(DestinationError, match="unauthorized_client"),
    ):
        dest.check()


def test_429_is_waited_out_and_nothing_is_lost(fake: FakeSfmc) -> None:
    fake.rate_limit, fake.window_s = 2, 1.0
    with prepared(fake) as dest:
        out = dest.deliver(batch([row(i) for i in range(1, 6)]))
    assert out.rejected == {} and len(customers(fake).rows) == 5
    assert fake.count("/data/v1/async", 429) > 0


def test_a_batch_is_split_by_rows_and_by_bytes(
    fake: FakeSfmc, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prepared(fake, batch_size=10) as dest:
        assert dest.deliver(batch([row(i) for i in range(1, 26)])).rejected == {}
    assert fake.count("/rows", 202) == 3
    monkeypatch.setattr(sfmc_client, "MAX_REQUEST_BYTES", 300)
    with prepared(fake) as dest:
        assert dest.deliver(batch([row(i) for i in range(1, 11)])).rejected == {}
    sizes = [len(e.body["items"]) for e in fake.log if e.path.endswith("/rows")][3:]
    assert len(sizes) > 1 and sum(sizes) == 10 and max(sizes) <= 6
    assert len(customers(fake).rows) == 25


def test_the_data_extension_is_checked_before_anything_is_sent(fake: FakeSfmc) -> None:
    with destination(fake) as dest:
        assert dest.check("key:Customers") == (
            f"Marketing Cloud accepts the installed package's credentials ({fake.url}); data "
            "extension 'Customers' has 5 fields, primary key CustomerID"
        )
        with pytest.raises(DestinationError, match="no data extension with external key 'Nope'"):
            dest.check("Nope")
        with pytest.raises(DestinationConfigError, match="has no field 'Phone'") as info:
            dest.prepare("Customers", "CustomerID", {"Phone": "VARCHAR"}, "BIGINT")
        assert "Email, FirstName" in str(info.value)
        dest.prepare("Customers", "Email", {"Plan": "VARCHAR"}, "VARCHAR")
        with pytest.raises(DestinationError, match="has primary key CustomerID"):
            dest.deliver(Batch("s", "r", "upsert", "Customers", [row(1)], match_field="Email"))
    assert not any("/rows" in e.path for e in fake.log)


def test_the_fake_refuses_what_marketing_cloud_refuses(fake: FakeSfmc) -> None:
    token = httpx.post(
        f"{fake.url}/v2/token",
        json={"grant_type": "client_credentials", "client_id": "cid-123", "client_secret": SECRET},
    ).json()["access_token"]
    url = f"{fake.url}/data/v1/async/dataextensions/key:Customers/rows"
    auth = {"Authorization": f"Bearer {token}"}
    for body, words in [
        ({"items": [{"CustomerID": 1}], "upsert": True}, "Unrecognized property"),
        ({"rows": [{"CustomerID": 1}]}, "Unrecognized property"),
        ({"items": []}, "non-empty array"),
        ({"items": [{"CustomerID": 1, "Tags": ["a"]}]}, "must be a single value"),
        ({"items": [{"CustomerID": i} for i in range(32_001)]}, "at most 32000"),
    ]:
        answer = httpx.put(url, json=body, headers=auth)
        assert answer.status_code == 400 and words in answer.json()["message"]
    assert httpx.put(url, json={"items": [{"CustomerID": 1}]}).status_code == 401
    bad_token = httpx.post(f"{fake.url}/v2/token", json={"client_id": "x", "secret": "y"})
    assert bad_token.status_code == 400 and bad_token.json()["error"] == "invalid_request"
    unknown = httpx.put(
        f"{fake.url}/data/v1/async/dataextensions/key:Nope/rows",
        json={"items": [{"CustomerID": 1}]},
        headers=auth,
    ).json()
    assert unknown["resultMessages"][0]["resultCode"] == "CustomObjectNotFound"
    fake.refused.clear()  # refused on purpose


# -- through Dagster ------------------------------------------------------------------------------
DEST = """
destinations:
  mc:
    type: sfmc
    auth_base_url: "{{ env.SFMC_AUTH_URL }}"
    client_id: cid-123
    client_secret: "{{ env.SFMC_SECRET }}"
    account_id: "100012345"
    poll_interval_s: 0.01
    backoff_initial_s: 0.01
"""


def sync(mode: str = "mirror", delete: str = "delete", object_: str = "key:Customers") -> str:
    return f"""
name: to_mc
model: {{table: users}}
primary_key: id
destination: mc
object: "{object_}"
mode: {mode}
match: {{column: id, field: CustomerID}}
mappings:
  - {{from: email, to: Email}}
  - {{from: first, to: FirstName}}
  - {{from: plan, to: Plan}}
delete_behavior: {delete}
"""


def test_a_mirror_sync_upserts_rejects_and_deletes(
    fake: FakeSfmc,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SFMC_AUTH_URL", fake.url)
    monkeypatch.setenv("SFMC_SECRET", SECRET)
    sql(
        warehouse_path,
        """create table users as select i as id, 'u' || i || '@example.com' as email,
        'User' || i as first, 'pro' as plan from range(1, 31) t(i)""",
    )
    sql(warehouse_path, "update users set first = 'A name far too long for it' where id = 4")
    defs = defs_from_yaml(DEST, sync())
    out = run_sync(defs, "to_mc", instance)
    assert out.status == "partial"  # delivered, one row refused
    assert (out.summary["succeeded"], out.summary["rejected"]) == (29, 1)
    assert sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    ) == [
        (
            "4",
            "UnexpectedError: String or binary data would be truncated.\r\nThe statement has "
            "been terminated.",
        )
    ]
    de = customers(fake)
    assert len(de.rows) == 29 and de.row(CustomerID=7) == {
        "Email": "u7@example.com",
        "FirstName": "User7",
        "Plan": "pro",
        "CustomerID": 7,
    }
    sql(
        warehouse_path,
        "delete from users where id > 27; update users set plan = 'free' where id = 1",
    )
    out = run_sync(defs, "to_mc", instance)
    assert out.status == "partial" and out.summary["removed"] == 3  # row 4 refused again
    assert len(de.rows) == 26 and de.row(CustomerID=1)["Plan"] == "free"  # type: ignore[index]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (sync(mode="update", delete="nothing"), "sfmc does not support mode 'update'"),
        (sync(object_="key:"), "no data extension external key"),
        (
            sync().replace("{from: plan, to: Plan}", "{to: Plan, object: {a: plan}}"),
            "a data extension field holds one value",
        ),
    ],
)
def test_declarations_sfmc_cannot_take_are_refused_at_load(yaml: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        defs_from_yaml(DEST, yaml)


def test_the_client_secret_must_come_from_the_environment() -> None:
    literal = DEST.replace('"{{ env.SFMC_SECRET }}"', "literal-secret-xyz")
    with pytest.raises(Exception, match="client_secret") as info:
        defs_from_yaml(literal, sync())
    assert "literal-secret-xyz" not in str(info.value)
