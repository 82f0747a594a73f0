"""Google Sheets: real syncs through Dagster against a fake Google (token endpoint + Sheets API v4)
on loopback, signing in with a service-account key made here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from retl_dagster.destinations import DestinationConfigError, build_destination
from retl_dagster.engine.config import ConfigError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.google_sheets import FakeGoogleSheets, Sheet
from retl_dagster_tests.harness import defs_from_yaml, sql

SPREADSHEET = "1AbC-retl_test-sheet"
EMAIL = "retl-sync@retl-test.iam.gserviceaccount.com"
TAB = "Users 'pro'"  # a space and quotes: the A1 ranges must quote the name
HEADER = ["id", "email", "plan", "tags"]


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def key_json(key: rsa.RSAPrivateKey, token_uri: str) -> str:
    """A service account key file as Google's console downloads it."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "retl-test",
            "private_key_id": "0123456789abcdef",
            "private_key": pem(key),
            "client_email": EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
    )


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google(
    monkeypatch: pytest.MonkeyPatch, private_key: rsa.RSAPrivateKey
) -> Iterator[FakeGoogleSheets]:
    fake = FakeGoogleSheets({EMAIL: private_key.public_key()}, SPREADSHEET, EMAIL)
    with fake:
        # token_url is left to its default: the key's token_uri.
        monkeypatch.setenv("GOOGLE_SA_JSON", key_json(private_key, f"{fake.url}/token"))
        monkeypatch.setenv("SHEETS_URL", fake.url)
        yield fake
    # Every request any test sent fitted Sheets' discovery document (contracts/google_sheets.py).
    assert fake.contract_errors == []


def destination(extra: str = "") -> str:
    return f"""
destinations:
  sheets:
    type: google_sheets
    spreadsheet_id: {SPREADSHEET}
    service_account_json: "{{{{ env.GOOGLE_SA_JSON }}}}"
    base_url: "{{{{ env.SHEETS_URL }}}}"
    requests_per_second: 500
    backoff_initial_s: 0.05
    backoff_max_s: 1
    {extra}
"""


def sync(mode: str = "mirror", delete: str = "delete", extra: str = "") -> str:
    return f"""
name: to_sheet
model: {{table: people}}
primary_key: id
destination: sheets
object: "{TAB}"
mode: {mode}
{extra}
mappings:
  - {{from: id, to: id}}
  - {{from: email, to: email}}
  - {{from: plan, to: plan}}
  - {{from: tags, to: tags}}
delete_behavior: {delete}
"""


def people(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table people as select i as id,
        'person' || i || '@example.com' as email,
        case when i % 2 = 0 then 'pro' else 'free' end as plan,
        ['t' || (i % 3), 'x'] as tags from range(1, {n + 1}) t(i)""",
    )


def rows(fake: FakeGoogleSheets) -> dict[Any, tuple[int, list[Any]]]:
    """id -> (row number, the row's other cells) of the tab, checking what a reader of the sheet
    would notice first: the header, no blank rows, no id twice."""
    table = fake.table(TAB)
    assert table[0] == HEADER
    out: dict[Any, tuple[int, list[Any]]] = {}
    for number, row in enumerate(table[1:], start=2):
        assert row, f"row {number} is blank"
        assert row[0] not in out, f"id {row[0]} is on rows {out[row[0]][0]} and {number}"
        out[row[0]] = (number, row[1:])
    return out


def sheets_requests(fake: FakeGoogleSheets) -> int:
    return sum(1 for kind, _ in fake.calls if kind != "token")


def test_mirror_writes_the_header_and_rows_updates_in_place_and_deletes_rows(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 300)
    defs = defs_from_yaml(destination(), sync())
    first = run_sync(defs, "to_sheet", instance)
    assert first.status == "succeeded", first.summary
    before = rows(google)
    assert set(before) == set(range(1, 301))
    assert before[7][1] == ["person7@example.com", "free", '["t1","x"]']  # a list as JSON text
    # token, spreadsheet, new tab, header, rows: one request writes all 300 rows.
    assert google.count_calls("values.batchUpdate") == 1 and sheets_requests(google) == 4
    assert google.count_calls("token") == 1

    sql(warehouse_path, "update people set plan = 'enterprise' where id in (2, 150, 299)")
    sql(warehouse_path, "delete from people where id in (5, 6, 7, 100, 250)")
    google.calls.clear()
    second = run_sync(defs, "to_sheet", instance)
    assert second.status == "succeeded", second.summary
    assert (second.summary["changed"], second.summary["removed"]) == (3, 5)
    after = rows(google)
    assert set(after) == set(range(1, 301)) - {5, 6, 7, 100, 250}
    gone = [before[i][0] for i in (5, 6, 7, 100, 250)]
    for id_, (number, cells) in after.items():
        # Each row moved up by the deleted rows above it, and its cells stayed its own.
        assert number == before[id_][0] - sum(g < before[id_][0] for g in gone)
        assert cells[1] == ("enterprise" if id_ in (2, 150, 299) else before[id_][1][1])
        assert cells[0] == f"person{id_}@example.com"
    # One read of the header and one of the key column, one write for the changed rows, one
    # request for the deletions: nothing per row.
    assert google.count_calls("values.get") == 2
    assert google.count_calls("values.batchUpdate") == 1
    assert google.count_calls("batchUpdate") == 1

    # A row below the deletions: found where it is now, not where the first run put it.
    sql(warehouse_path, "update people set plan = 'churned' where id = 280")
    assert run_sync(defs, "to_sheet", instance).status == "succeeded"
    now = rows(google)
    assert now[280] == (after[280][0], ["person280@example.com", "churned", '["t1","x"]'])
    assert {k: v for k, v in now.items() if k != 280} == {
        k: v for k, v in after.items() if k != 280
    }
    [(dest_id,)] = sql(
        warehouse_path, "select _retl_dest_id from _retl.to_sheet__state where _retl_key = '280'"
    )
    assert dest_id == str(after[280][0])


def test_clear_blanks_a_row_but_keeps_its_key_and_place(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 10)
    defs = defs_from_yaml(destination(), sync("upsert", "clear"))
    assert run_sync(defs, "to_sheet", instance).status == "succeeded"
    before = rows(google)
    sql(warehouse_path, "delete from people where id = 4")
    out = run_sync(defs, "to_sheet", instance)
    assert (out.status, out.summary["removed"]) == ("succeeded", 1)
    assert rows(google)[4] == (before[4][0], [])  # only the key is left
    assert len(rows(google)) == 10

    sql(warehouse_path, "insert into people values (4, 'back@example.com', 'pro', ['t1'])")
    out = run_sync(defs, "to_sheet", instance)
    assert (out.status, out.summary["added"]) == ("succeeded", 1)
    assert rows(google)[4] == (before[4][0], ["back@example.com", "pro", '["t1"]'])
    assert len(rows(google)) == 10  # filled again in its place, not appended


def existing_tab(fake: FakeGoogleSheets, cells: list[list[Any]]) -> None:
    fake.spreadsheets[SPREADSHEET].sheets.append(Sheet(77, TAB, 1, 1000, 26, cells))


def test_update_writes_only_rows_that_exist_and_insert_leaves_them_alone(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 5)
    existing_tab(google, [HEADER, [2, "old", "old"], ["3", "keep", "keep", "", "a note"]])
    out = run_sync(defs_from_yaml(destination(), sync("update", "nothing")), "to_sheet", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (2, 3)
    errors = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected' "
        "order by _retl_key",
    )
    assert errors[0] == (
        "1",
        "not found: no row with id 1 in tab 'Users 'pro'' (mode update never adds rows)",
    )
    assert google.table(TAB) == [
        HEADER,
        [2, "person2@example.com", "pro", '["t2","x"]'],
        # A key typed as text is still found; a cell past the mapped columns is left alone.
        [3, "person3@example.com", "free", '["t0","x"]', "a note"],
    ]


def test_insert_appends_new_rows_and_leaves_existing_ones(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 3)
    existing_tab(google, [HEADER, [2, "typed by hand", "", ""]])
    out = run_sync(defs_from_yaml(destination(), sync("insert", "nothing")), "to_sheet", instance)
    assert (out.status, out.summary["succeeded"]) == ("succeeded", 3)
    table = rows(google)
    assert table[2] == (2, ["typed by hand"])
    assert sorted(table) == [1, 2, 3]


def test_a_cell_over_50000_characters_is_rejected_before_sending_and_retried_later(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 20)
    sql(warehouse_path, "update people set email = repeat('é', 50001) where id = 7")
    defs = defs_from_yaml(destination(), sync())
    out = run_sync(defs, "to_sheet", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (19, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert (key, error) == (
        "7",
        "field 'email' is 50,001 characters; a Google Sheets cell holds at most 50,000",
    )
    assert google.count_calls("values.batchUpdate", 400) == 0  # refused before sending
    assert 7 not in rows(google)

    sql(warehouse_path, "update people set email = 'fixed@example.com' where id = 7")
    again = run_sync(defs, "to_sheet", instance)
    assert (again.status, again.summary["succeeded"]) == ("succeeded", 1)
    assert rows(google)[7][1][0] == "fixed@example.com"
    assert len(rows(google)) == 20


def test_rows_past_the_spreadsheets_cell_limit_are_rejected_with_googles_reason(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 1500)
    # Sheet1 (1000 x 26) and the new tab (1000 rows x 4 columns) fit; 500 more rows do not.
    google.cell_limit = 1000 * 26 + 1000 * 4 + 100
    defs = defs_from_yaml(destination(), sync())
    out = run_sync(defs, "to_sheet", instance)
    assert out.status == "partial"
    assert (out.summary["succeeded"], out.summary["rejected"]) == (999, 501)
    [(error,)] = sql(
        warehouse_path,
        "select distinct error from _retl.sync_record_results where status = 'rejected'",
    )
    assert error == (
        "no room in the spreadsheet: INVALID_ARGUMENT: Invalid requests[0].appendDimension: "
        "This action would increase the number of cells in the workbook above the limit of "
        "30100 cells."
    )
    assert len(rows(google)) == 999

    google.cell_limit = 10_000_000  # e.g. another tab was deleted
    again = run_sync(defs, "to_sheet", instance)
    assert (again.status, again.summary["succeeded"]) == ("succeeded", 501)
    assert set(rows(google)) == set(range(1, 1501))


def test_quota_errors_are_survived_with_nothing_lost_or_doubled(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    google.read_quota, google.write_quota, google.quota_window_s = 1, 2, 0.4
    people(warehouse_path, 1000)
    defs = defs_from_yaml(destination("batch_size: 100"), sync())
    out = run_sync(defs, "to_sheet", instance)
    assert out.status == "succeeded", out.summary
    throttled = [kind for kind, status in google.calls if status == 429]
    assert "values.batchUpdate" in throttled and "values.get" not in throttled  # a new tab
    assert set(rows(google)) == set(range(1, 1001))

    sql(warehouse_path, "delete from people where id % 10 = 3")
    sql(warehouse_path, "update people set plan = 'gold' where id % 10 = 4")
    google.calls.clear()
    again = run_sync(defs, "to_sheet", instance)
    assert again.status == "succeeded", again.summary
    assert "values.get" in {kind for kind, status in google.calls if status == 429}
    table = rows(google)
    assert set(table) == {i for i in range(1, 1001) if i % 10 != 3}
    assert all((cells[1] == "gold") == (i % 10 == 4) for i, (_, cells) in table.items())


def test_lost_answers_neither_delete_the_wrong_rows_nor_double_any(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 200)
    defs = defs_from_yaml(destination(), sync())
    google.lose_answers = {"batchUpdate": 1}  # the tab is made, the answer lost
    assert run_sync(defs, "to_sheet", instance).status == "succeeded"
    before = rows(google)
    assert set(before) == set(range(1, 201))

    sql(warehouse_path, "delete from people where id in (10, 11, 12, 150)")
    sql(warehouse_path, "update people set plan = 'gold' where id = 190")
    sql(
        warehouse_path,
        "insert into people select i, 'new' || i, 'new', ['n'] from range(201, 206) t(i)",
    )
    # Rows written and rows deleted, each answer lost once: a deletion sent again as it was
    # would delete the four rows that moved up into place.
    google.lose_answers = {"values.batchUpdate": 1, "batchUpdate": 1}
    google.calls.clear()
    out = run_sync(defs, "to_sheet", instance)
    assert out.status == "succeeded", out.summary
    assert google.count_calls("values.batchUpdate", 503) == 1
    assert google.count_calls("batchUpdate", 503) == 1
    after = rows(google)
    assert set(after) == set(range(1, 206)) - {10, 11, 12, 150}
    gone = [before[i][0] for i in (10, 11, 12, 150)]
    for id_, (number, cells) in before.items():
        if id_ in after:
            assert after[id_][0] == number - sum(g < number for g in gone)
            assert after[id_][1] == (cells if id_ != 190 else [cells[0], "gold", cells[2]])
    assert [after[i][1] for i in range(201, 206)] == [
        [f"new{i}", "new", '["n"]'] for i in range(201, 206)
    ]


def test_50k_rows_sync_in_a_few_dozen_requests(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 50_000)
    defs = defs_from_yaml(destination(), sync())
    out = run_sync(defs, "to_sheet", instance)
    assert (out.status, out.summary["succeeded"]) == ("succeeded", 50_000)
    # 5,000 rows a batch: ten writes; the grid grows 20,000 rows at a time (three times);
    # the spreadsheet, the new tab and its header: 16 requests.
    assert google.count_calls("values.batchUpdate") == 10
    assert sheets_requests(google) == 16
    assert len(rows(google)) == 50_000

    sql(warehouse_path, "update people set plan = 'gold' where id % 25 = 0")
    sql(warehouse_path, "delete from people where id % 17 = 0")
    google.calls.clear()
    again = run_sync(defs, "to_sheet", instance)
    assert again.status == "succeeded", again.summary
    assert (again.summary["changed"], again.summary["removed"]) == (2000 - 117, 2941)
    # One batch: the spreadsheet, the header and the key column, one write, one deletion.
    assert sheets_requests(google) == 5
    table = rows(google)
    assert set(table) == {i for i in range(1, 50_001) if i % 17}
    assert all((cells[1] == "gold") == (i % 25 == 0) for i, (_, cells) in table.items())


def test_the_token_is_cached_and_renewed_when_google_says_401(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 30)
    google.expire_tokens_after = 3  # after the spreadsheet, the new tab and the header
    out = run_sync(defs_from_yaml(destination("batch_size: 10"), sync()), "to_sheet", instance)
    assert out.status == "succeeded", out.summary
    assert google.count_calls("token", 200) == 2  # 7 Sheets requests, 2 tokens
    assert sum(1 for _, status in google.calls if status == 401) == 1
    assert set(rows(google)) == set(range(1, 31))


def test_a_key_google_does_not_know_fails_the_run_saying_so(
    google: FakeGoogleSheets,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    monkeypatch.setenv("GOOGLE_SA_JSON", key_json(stranger, f"{google.url}/token"))
    people(warehouse_path, 3)
    out = run_sync(defs_from_yaml(destination(), sync()), "to_sheet", instance)
    assert out.status == "failed"
    assert (
        f"the token endpoint refused service account {EMAIL} "
        "(invalid_grant: Invalid JWT Signature.)" in out.summary["error"]
    )
    assert google.count_calls("values.batchUpdate") == 0


def test_a_spreadsheet_not_shared_with_the_account_fails_the_run_naming_the_fix(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    google.spreadsheets[SPREADSHEET].shared_with.clear()
    people(warehouse_path, 3)
    out = run_sync(defs_from_yaml(destination(), sync()), "to_sheet", instance)
    assert out.status == "failed"
    assert "PERMISSION_DENIED: The caller does not have permission" in out.summary["error"]
    assert f"share the spreadsheet with {EMAIL} as an editor" in out.summary["error"]


def test_a_tab_holding_other_data_is_left_alone(
    google: FakeGoogleSheets, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    existing_tab(google, [["Name", "Budget"], ["Marketing", 1200]])
    people(warehouse_path, 3)
    out = run_sync(defs_from_yaml(destination(), sync()), "to_sheet", instance)
    assert out.status == "failed"
    assert "starts with 'Name', not this sync's key column 'id'" in out.summary["error"]
    assert google.table(TAB) == [["Name", "Budget"], ["Marketing", 1200]]


def test_declarations_google_sheets_cannot_serve_are_refused(google: FakeGoogleSheets) -> None:
    with pytest.raises(ConfigError, match="finds a record's row by the first mapped column"):
        defs_from_yaml(destination(), sync(extra="match: {column: email, field: email}"))
    with pytest.raises(ConfigError, match="field 'object'"):
        defs_from_yaml(destination(), sync().replace(f'object: "{TAB}"', ""))
    with pytest.raises(ConfigError, match="does not support mode 'events'"):
        defs_from_yaml(destination(), sync("events", "nothing"))
    secret = '{"private_key": "-----BEGIN PRIVATE KEY-----secret"}'
    with pytest.raises(DestinationConfigError, match="lacks client_email") as refused:
        build_destination(
            "sheets",
            "google_sheets",
            {"spreadsheet_id": SPREADSHEET, "service_account_json": secret},
        )
    assert "secret" not in str(refused.value)


def test_secrets_appear_nowhere(
    google: FakeGoogleSheets,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    private_key: rsa.RSAPrivateKey,
) -> None:
    people(warehouse_path, 20)
    sql(warehouse_path, "update people set email = repeat('x', 60000) where id = 2")
    defs = defs_from_yaml(destination(), sync())
    outcomes = [run_sync(defs, "to_sheet", instance)]
    google.expire_tokens_after = 1
    sent = defs.resolve_job_def("test_row_to_sheet").execute_in_process(
        instance=instance,
        run_config={"ops": {"test_row_to_sheet_op": {"config": {"row_id": "3"}}}},
    )
    assert sent.success
    [output] = [e for e in sent.all_events if e.event_type_value == "STEP_OUTPUT"]
    exchange = str(output.event_specific_data.metadata["exchange"].value)  # type: ignore[union-attr]
    assert "values:batchUpdate" in exchange and "authorization: ***" in exchange.lower()
    monkeypatch.setenv(
        "GOOGLE_SA_JSON",
        key_json(
            rsa.generate_private_key(public_exponent=65537, key_size=2048), google.url + "/token"
        ),
    )
    outcomes.append(run_sync(defs_from_yaml(destination(), sync()), "to_sheet", instance))
    assert [o.status for o in outcomes] == ["partial", "failed"]
    texts = [repr(o.summary) for o in outcomes] + [exchange]
    for run in instance.get_runs():
        texts += [repr(e) for e in instance.all_logs(run.run_id)]
    for table in ("sync_runs", "sync_record_results", "to_sheet__state", "to_sheet__pending"):
        texts.append(repr(sql(warehouse_path, f"select * from _retl.{table}")))
    texts.append(repr(defs.resources))
    blob = "\n".join(texts)
    assert "a Google Sheets cell holds at most 50,000" in blob  # the errors are there
    assert "invalid_grant: Invalid JWT Signature." in blob
    assert len(google.issued) >= 2 and google.assertions
    body = pem(private_key).splitlines()[5]
    for secret in [body, "PRIVATE KEY", *google.issued, *google.assertions]:
        assert secret not in blob
