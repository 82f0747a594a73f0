"""Sheets' discovery document (sheets.v4.json) against the requests our client sends.

Every request of the Google Sheets destination tests is checked by the fake (their fixture
asserts none was refused); here the validator itself is shown to accept our shapes and to fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from retl_dagster.destinations.impl.google_sheets.client import GoogleSheetsDestination
from retl_dagster_tests.contracts.google_sheets import ContractError, check_request, method


class _Tab:
    sheet_id = 7


def _values(**extra: Any) -> dict[str, Any]:
    data = [{"range": "'People'!A2:C3", "majorDimension": "ROWS", "values": [[1, "a", None]]}]
    return {"valueInputOption": "RAW", "data": data, **extra}


def test_the_methods_are_the_documented_ones() -> None:
    assert method("spreadsheets.values.batchUpdate")["request"] == {
        "$ref": "BatchUpdateValuesRequest"
    }
    assert method("spreadsheets.batchUpdate")["request"] == {
        "$ref": "BatchUpdateSpreadsheetRequest"
    }


def test_our_request_shapes_fit() -> None:
    check_request("values.batchUpdate", _values(), {})
    check_request(
        "values.update",
        {"majorDimension": "ROWS", "values": [["id", "email"]]},
        {"valueInputOption": "RAW"},
    )
    check_request(
        "values.get", None, {"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "ROWS"}
    )
    check_request("get", None, {"fields": "sheets.properties"})
    delete = GoogleSheetsDestination._delete_rows(_Tab(), 2, 4)  # type: ignore[arg-type]
    check_request("batchUpdate", {"requests": [delete]}, {})
    add = {
        "addSheet": {
            "properties": {
                "title": "People",
                "gridProperties": {"rowCount": 1000, "columnCount": 3},
            }
        }
    }
    grow = {"appendDimension": {"sheetId": 7, "dimension": "COLUMNS", "length": 2}}
    check_request("batchUpdate", {"requests": [add, grow]}, {})


@pytest.mark.parametrize(
    ("kind", "body", "params", "expected"),
    [
        (
            "values.batchUpdate",
            _values(valueInputOptions="RAW"),
            {},
            "unknown property 'valueInputOptions'",
        ),
        ("values.batchUpdate", _values(valueInputOption="raw"), {}, "'raw' is not one of"),
        (
            "values.batchUpdate",
            {"valueInputOption": "RAW", "data": {"range": "A1"}},
            {},
            "expected an array",
        ),
        (
            "batchUpdate",
            {"requests": [{"appendDimension": {"sheetId": "7", "dimension": "ROWS", "length": 1}}]},
            {},
            "sheetId: expected an integer",
        ),
        ("batchUpdate", {"requests": [{"deleteRows": {}}]}, {}, "unknown property 'deleteRows'"),
        (
            "values.update",
            {"values": [["a"]]},
            {"valueInputOption": "PARSED"},
            "'PARSED' is not one of",
        ),
        ("values.get", None, {"renderOption": "FORMULA"}, "unknown parameter 'renderOption'"),
        ("values.get", {"values": []}, {}, "takes no request body"),
    ],
)
def test_the_validator_refuses(kind: str, body: Any, params: dict[str, str], expected: str) -> None:
    with pytest.raises(ContractError, match=expected):
        check_request(kind, body, params)
