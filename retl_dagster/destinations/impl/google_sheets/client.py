"""Google Sheets API v4: a sync mirrors its model into one tab (`object`) of a spreadsheet.

Layout: row 1 is the header (the mappings' `to` names in mapping order); each record is one row,
found by the first column, which must carry the primary key. Requests per batch, never per row:
one `values:batchUpdate` (split under Google's recommended 2 MB) writes every changed and added
row, each a range of its own (adjacent rows share one); added rows go below the last key, after an
`appendDimension` when the grid is too small; removed rows go in one `spreadsheets.batchUpdate` of
`deleteDimension` requests, bottom-up, so no deletion moves a row another one names.

Every write names its rows, so resending it after a lost answer writes the same cells again.
A deletion is not like that (resent, it would delete the rows that moved up into place): it is
sent once, and after a lost answer the key column is read again before what is still there is
deleted.

A deletion moves every row below it up, so the row numbers kept in state (`dest_id`) go stale:
each run reads the key column once (`prepare`) and keeps key -> row up to date itself.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import jwt

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.http import GaveUp, HttpClient, HttpSettings, error_text
from retl_dagster.destinations.impl.google_sheets.config import (
    MAX_BATCH_SIZE,
    GoogleSheetsConfig,
    ServiceAccountKey,
)
from retl_dagster.destinations.impl.google_sheets.exceptions import (
    GoogleSheetsAuthError,
    GoogleSheetsError,
    SpreadsheetNotFound,
    TabNotOwned,
)

SCOPE = "https://www.googleapis.com/auth/spreadsheets"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_S = 3600
"""Google accepts an assertion valid for at most one hour."""
REFRESH_MARGIN_S = 300.0
"""A cached access token is replaced this long before it expires."""
DEFAULT_RPS = 1.0
"""Google's documented quotas: 60 read and 60 write requests per minute per user."""
MAX_PAYLOAD_BYTES = 1_900_000
"""Google recommends at most 2 MB a request."""
MAX_CELL_CHARS = 50_000
"""A cell holds at most 50,000 characters."""
MAX_COLUMNS = 18_278
"""A sheet has at most 18,278 columns (A..ZZZ)."""
NEW_TAB_ROWS = 1000
GROWTH_BATCHES = 4
"""The grid grows by room for this many batches at once (fewer requests), or by just what is
needed when the spreadsheet's 10 million cells do not allow that much."""
BISECT_BUDGET = 64
"""Requests spent isolating rows of a refused write; past that the rest is rejected whole (a
refusal of every row, e.g. a tab deleted mid-run, would otherwise cost two requests a row)."""
EXACT_INT = 2**53
"""Sheets stores numbers as doubles: larger integers go as text, so no digit is lost."""
_RANGE_OVERHEAD = 80


def column_letter(n: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def a1(tab: str, cells: str) -> str:
    """A range of tab `tab` in A1 notation; the name is always quoted (spaces, `!`, `'`)."""
    return "'" + tab.replace("'", "''") + "'!" + cells


def cell_value(value: Any) -> Any:
    """A JSON-ready field value as a RAW cell: strings stay text (`=1+1` is not a formula),
    objects and arrays become JSON text. `None` in Sheets' values means "leave the cell as it
    is", so a null goes as "" (an empty cell)."""
    if value is None:
        return ""
    if isinstance(value, bool | float | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < EXACT_INT else str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def cell_key(value: Any) -> str | None:
    """A key cell (as written, or read back unformatted) as text, to compare with a record's
    key: `5` and `5.0` are both "5"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cell_length(text: str) -> int:
    """Characters as Sheets counts them (UTF-16 code units), never fewer than Python's."""
    return len(text.encode("utf-16-le")) // 2


def google_message(response: httpx.Response) -> str:
    """Google's own words: `STATUS: message` (APIs) or `error: error_description` (OAuth)."""
    try:
        body = response.json()
    except ValueError:
        return error_text(response)
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return f"{err.get('status', response.status_code)}: {err.get('message', '')}"
    if isinstance(err, str):
        return f"{err}: {body.get('error_description', '')}".rstrip(": ")
    return error_text(response)


class ServiceAccountToken:
    """An access token for a service account by the JWT bearer grant (RFC 7523): a JWT signed
    RS256 with the account's key, exchanged at the token endpoint; cached until shortly before
    it expires.

    Why PyJWT (with cryptography for RS256) rather than google-auth: google-auth refreshes
    through its own transport (`requests`), outside HttpClient's retries, Retry-After handling
    and rate limit; signing is all we need from a library, and the exchange is one POST.
    """

    def __init__(
        self, destination: str, settings: HttpSettings, key: ServiceAccountKey, token_url: str
    ) -> None:
        self.destination = destination
        self.key = key
        self.token_url = token_url
        # A client of its own: its answers carry access tokens, and `retl test-row` prints the
        # exchanges of the destination's `client`.
        self.http = HttpClient(destination, settings)
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetched = 0
        """Tokens obtained so far."""

    def get(self) -> str:
        if self._token is None or time.monotonic() >= self._expires_at:
            self._token = self._fetch()
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.key.client_email,
            "scope": SCOPE,
            "aud": self.token_url,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
        }
        headers = {"kid": self.key.private_key_id} if self.key.private_key_id else None
        try:
            return jwt.encode(claims, self.key.private_key, algorithm="RS256", headers=headers)
        except Exception:
            # `from None`: whatever the parser said may quote the key.
            raise GoogleSheetsAuthError(
                f"destination '{self.destination}': the private_key in service_account_json is "
                "not a PEM RSA private key. Fix: give the key file's JSON exactly as downloaded"
            ) from None

    def _fetch(self) -> str:
        response = self.http.request(
            "POST",
            self.token_url,
            data={"grant_type": JWT_BEARER, "assertion": self._assertion()},
        )
        if not response.is_success:
            raise GoogleSheetsAuthError(
                f"destination '{self.destination}': the token endpoint refused service account "
                f"{self.key.client_email} ({google_message(response)}). Fix: check that the "
                "key is current (not deleted or disabled in IAM) and the machine's clock is right"
            )
        body = response.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise GoogleSheetsAuthError(
                f"destination '{self.destination}': the token endpoint answered without an "
                "access_token"
            )
        lifetime = float(body.get("expires_in") or TOKEN_LIFETIME_S)
        self._expires_at = time.monotonic() + lifetime - min(REFRESH_MARGIN_S, lifetime / 2)
        self.fetched += 1
        return token

    def close(self) -> None:
        self.http.close()


@dataclass
class _Tab:
    """The tab as this run knows it."""

    title: str
    sheet_id: int
    headers: list[str]
    row_count: int
    """Rows in the grid (filled or not)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Record key -> its 1-based row."""
    next_row: int = 2
    """The row below the last key."""

    @property
    def last_column(self) -> str:
        return column_letter(len(self.headers))


@dataclass
class _Write:
    row: int
    values: list[Any]
    key: str


class GoogleSheetsDestination(Destination[GoogleSheetsConfig]):
    type: ClassVar[str] = "google_sheets"
    config_class = GoogleSheetsConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = MAX_BATCH_SIZE
    # Rows are addressed by position in a tab: two syncs writing one tab would overwrite each
    # other's rows, so one at a time unless the destination sets `pool_limit`.
    pool_limit = 1
    requires_object = True
    bisect_budget = BISECT_BUDGET

    def __init__(self, name: str, config: GoogleSheetsConfig) -> None:
        super().__init__(name, config)
        key = config.key()
        self.client_email = key.client_email
        self.auth = ServiceAccountToken(name, config, key, config.resolved_token_url())
        self.client = HttpClient(
            name, config, base_url=str(config.base_url).rstrip("/"), default_rps=DEFAULT_RPS
        )
        # Deletions go out one attempt at a time (see the module's docstring), in the same
        # rate limit.
        self.once = HttpClient(
            name,
            config.model_copy(update={"max_attempts": 1}),
            base_url=str(config.base_url).rstrip("/"),
        )
        self.once.limiter = self.client.limiter
        self.path = f"/v4/spreadsheets/{config.spreadsheet_id}"
        self.tab: _Tab | None = None

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.match_field is not None:
            problems.append(
                (
                    "match",
                    "google_sheets finds a record's row by the first mapped column, which "
                    "carries the primary key; it takes no match",
                    "remove match and map the primary key first, e.g. `- {from: id, to: id}`",
                )
            )
        if len(sync.fields) > MAX_COLUMNS:
            problems.append(
                (
                    "mappings",
                    f"{len(sync.fields)} columns; a sheet has at most {MAX_COLUMNS}",
                    "map fewer fields",
                )
            )
        return problems

    # -- requests ---------------------------------------------------------------------------
    def _call(
        self, method: str, path: str, client: HttpClient | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One Sheets request with a current token: a 401 gets a new token and one more try;
        401/403/404 after that stop the run, saying what to fix."""
        client = client or self.client
        response = self._send(client, method, path, **kwargs)
        if response.status_code == 401:
            self.auth.invalidate()
            response = self._send(client, method, path, **kwargs)
        if response.status_code in (401, 403):
            raise GoogleSheetsAuthError(
                f"destination '{self.name}': Google refused access to spreadsheet "
                f"{self.config.spreadsheet_id} ({google_message(response)}). Fix: share the "
                f"spreadsheet with {self.client_email} as an editor, and enable the Google "
                "Sheets API in the service account's project"
            )
        if response.status_code == 404:
            raise SpreadsheetNotFound(
                f"destination '{self.name}': no spreadsheet {self.config.spreadsheet_id} "
                f"({google_message(response)}). Fix: set spreadsheet_id to the id in the "
                "spreadsheet's URL (https://docs.google.com/spreadsheets/d/<id>/edit)"
            )
        return response

    def _send(self, client: HttpClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.auth.get()}"}
        return client.request(method, path, headers=headers, **kwargs)

    def _values_path(self, tab: _Tab, cells: str) -> str:
        return f"{self.path}/values/{quote(a1(tab.title, cells), safe='')}"

    def _batch_update(self, requests: list[dict[str, Any]]) -> httpx.Response:
        return self._call("POST", f"{self.path}:batchUpdate", json={"requests": requests})

    def _failed(self, what: str, response: httpx.Response) -> GoogleSheetsError:
        return GoogleSheetsError(
            f"destination '{self.name}': {what} failed ({google_message(response)})"
        )

    def _get_values(self, tab: _Tab, cells: str) -> list[list[Any]]:
        response = self._call(
            "GET",
            self._values_path(tab, cells),
            params={"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "ROWS"},
        )
        if not response.is_success:
            raise self._failed(f"reading {a1(tab.title, cells)}", response)
        values = response.json().get("values", [])
        return values if isinstance(values, list) else []

    def check(self, object_: str | None = None) -> str:
        """A token for the service account, then `GET spreadsheets/<id>` of the title (and the
        tabs' titles): the key is accepted and the spreadsheet is shared with the account.
        Whether it is shared as an editor shows only on a write, which this never makes."""
        fields = "spreadsheetId,properties.title" + (",sheets.properties.title" if object_ else "")
        response = self._call("GET", self.path, params={"fields": fields})
        if not response.is_success:
            raise self._failed("reading the spreadsheet", response)
        body = response.json()
        title = (body.get("properties") or {}).get("title", "")
        said = (
            f"Google accepted service account {self.client_email}; spreadsheet '{title}' "
            "readable (edit access shows on the first write)"
        )
        if object_:
            tabs = {(s.get("properties") or {}).get("title") for s in body.get("sheets", [])}
            said += f"; tab '{object_}' " + ("exists" if object_ in tabs else "will be created")
        return said

    # -- the tab ----------------------------------------------------------------------------
    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        """Find or create the tab, write the header if it is not there, and read the key
        column once: key -> row as it is now, whatever deletions happened since."""
        assert object_
        headers = list(field_types)
        props = self._tabs().get(object_)
        fresh = props is None
        if props is None:
            props, fresh = self._add_tab(object_, len(headers))
        grid = props.get("gridProperties", {})
        tab = _Tab(object_, int(props["sheetId"]), headers, int(grid.get("rowCount", 0)))
        columns = int(grid.get("columnCount", 0))
        current: list[str] = []
        if not fresh:
            first = self._get_values(tab, "1:1")
            current = ["" if v is None else str(v) for v in (first[0] if first else [])]
            if current and current[0] != headers[0]:
                raise TabNotOwned(
                    f"destination '{self.name}': row 1 of tab '{object_}' starts with "
                    f"'{current[0]}', not this sync's key column '{headers[0]}', so the tab "
                    "holds other data. Fix: set object to a new tab name (it is created), or "
                    "empty the tab"
                )
            self._read_keys(tab)
        if current != headers:
            if columns < len(headers):
                grow = self._append_dimension(tab, "COLUMNS", len(headers) - columns)
                if not grow.is_success:
                    raise self._failed(f"adding columns to tab '{object_}'", grow)
            # A shorter header than before blanks the old names past its end.
            row = headers + [""] * max(0, len(current) - len(headers))
            end = column_letter(len(row))
            written = self._call(
                "PUT",
                self._values_path(tab, f"A1:{end}1"),
                params={"valueInputOption": "RAW"},
                json={"majorDimension": "ROWS", "values": [row]},
            )
            if not written.is_success:
                raise self._failed(f"writing the header of tab '{object_}'", written)
        self.tab = tab

    def _tabs(self) -> dict[str, dict[str, Any]]:
        """Title -> properties of every tab."""
        response = self._call("GET", self.path, params={"fields": "sheets.properties"})
        if not response.is_success:
            raise self._failed("reading the spreadsheet", response)
        return {
            s["properties"]["title"]: s["properties"] for s in response.json().get("sheets", [])
        }

    def _read_keys(self, tab: _Tab) -> None:
        """Key -> row from one read of the key column (a key typed twice: its first row)."""
        tab.rows, tab.next_row = {}, 2
        for i, row in enumerate(self._get_values(tab, "A2:A")):
            key = cell_key(row[0]) if row else None
            if key is not None:
                tab.rows.setdefault(key, i + 2)
            tab.next_row = i + 3

    def _add_tab(self, title: str, columns: int) -> tuple[dict[str, Any], bool]:
        """The new tab's properties, and False when it was there already (an earlier attempt
        whose answer was lost created it)."""
        response = self._batch_update(
            [
                {
                    "addSheet": {
                        "properties": {
                            "title": title,
                            # As many columns as mapped fields: the 10 million cells a
                            # spreadsheet may hold count empty ones too.
                            "gridProperties": {"rowCount": NEW_TAB_ROWS, "columnCount": columns},
                        }
                    }
                }
            ]
        )
        if response.status_code == 400 and title in (tabs := self._tabs()):
            return tabs[title], False
        if not response.is_success:
            raise self._failed(f"creating tab '{title}'", response)
        props: dict[str, Any] = response.json()["replies"][0]["addSheet"]["properties"]
        return props, True

    def _append_dimension(self, tab: _Tab, dimension: str, length: int) -> httpx.Response:
        return self._batch_update(
            [
                {
                    "appendDimension": {
                        "sheetId": tab.sheet_id,
                        "dimension": dimension,
                        "length": length,
                    }
                }
            ]
        )

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        tab = self.tab
        if tab is None or tab.title != batch.object:
            raise GoogleSheetsError(f"destination '{self.name}': deliver() before prepare()")
        out = BatchResult()
        writes: list[_Write] = []
        appends: list[tuple[str, list[Any]]] = []
        removes: list[str] = []
        width = len(tab.headers)
        for r in batch.records:
            if r.op == "removed":
                removes.append(r.key)
                continue
            row = tab.rows.get(r.key)
            if len(r.fields) == width and all(v is None for v in r.fields.values()):
                # delete_behavior clear: blank the cells, keep the key so the row keeps its
                # place (and is filled again if the record comes back).
                if row is not None:
                    writes.append(_Write(row, [None] + [""] * (width - 1), r.key))
                continue
            values, problem = self._row(tab, r)
            if problem is not None:
                out.rejected[r.key] = problem
            elif row is not None:
                if batch.mode != "insert":  # insert leaves an existing row as it is
                    writes.append(_Write(row, values, r.key))
            elif batch.mode == "update":
                out.rejected[r.key] = (
                    f"not found: no row with {tab.headers[0]} {r.key} in tab '{tab.title}' "
                    "(mode update never adds rows)"
                )
            else:
                appends.append((r.key, values))
        writes += self._place(tab, appends, out)
        self._write(tab, writes, out)
        self._delete(tab, removes, out)
        for r in batch.records:
            if r.op != "removed" and r.key not in out.rejected and r.key in tab.rows:
                out.dest_ids[r.key] = str(tab.rows[r.key])
        return out

    def _row(self, tab: _Tab, record: Record) -> tuple[list[Any], str | None]:
        """The record's cells in header order, or why Sheets would refuse them."""
        values: list[Any] = []
        for name in tab.headers:
            if name not in record.fields:
                values.append(None)  # sync_nulls: false -> the cell is left as it is
                continue
            value = cell_value(record.fields[name])
            if isinstance(value, str) and cell_length(value) > MAX_CELL_CHARS:
                return [], (
                    f"field '{name}' is {cell_length(value):,} characters; a Google Sheets cell "
                    f"holds at most {MAX_CELL_CHARS:,}"
                )
            values.append(value)
        if cell_key(values[0]) != record.key:
            return [], (
                f"column '{tab.headers[0]}' (the first mapping) must carry the primary key: it "
                f"holds {values[0]!r} for key {record.key!r}. Fix: map the primary key column "
                "first"
            )
        return values, None

    def _place(
        self, tab: _Tab, appends: list[tuple[str, list[Any]]], out: BatchResult
    ) -> list[_Write]:
        """Rows below the last key for new records, growing the grid first; those that find
        no room (the spreadsheet's cell limit) are rejected with Google's reason."""
        if not appends:
            return []
        last = tab.next_row + len(appends) - 1
        refusal = self._grow_rows(tab, last) if last > tab.row_count else None
        room = max(0, tab.row_count - tab.next_row + 1)
        placed = [
            _Write(tab.next_row + i, values, key) for i, (key, values) in enumerate(appends[:room])
        ]
        for key, _ in appends[room:]:
            out.rejected[key] = f"no room in the spreadsheet: {refusal}"
        tab.next_row += len(placed)
        return placed

    def _grow_rows(self, tab: _Tab, last: int) -> str | None:
        """Make the grid reach row `last`; Google's reason when it cannot."""
        needed = last - tab.row_count
        refusal = None
        for length in dict.fromkeys((max(needed, self.batch_size * GROWTH_BATCHES), needed)):
            response = self._append_dimension(tab, "ROWS", length)
            if response.is_success:
                tab.row_count += length
                return None
            if response.status_code != 400:
                raise self._failed(f"adding rows to tab '{tab.title}'", response)
            refusal = google_message(response)
        return refusal

    def _write(self, tab: _Tab, writes: list[_Write], out: BatchResult) -> None:
        """Every row in as few `values:batchUpdate` requests as the payload limit allows."""
        writes.sort(key=lambda w: w.row)
        budget = self.request_budget()  # shared by the batch's requests

        def send(chunk: Sequence[_Write]) -> str | None:
            return self._send_values(tab, chunk, out)

        def reject(w: _Write, reason: str) -> None:
            out.rejected[w.key] = reason

        chunk: list[_Write] = []
        size = 0
        for w in writes:
            w_size = len(json.dumps(w.values, ensure_ascii=False)) + _RANGE_OVERHEAD
            if chunk and size + w_size > MAX_PAYLOAD_BYTES:
                send_isolating(chunk, send, reject, budget)
                chunk, size = [], 0
            chunk.append(w)
            size += w_size
        if chunk:
            send_isolating(chunk, send, reject, budget)

    def _send_values(self, tab: _Tab, writes: Sequence[_Write], out: BatchResult) -> str | None:
        """One `values:batchUpdate`; Google's reason when it refused the request whole (400:
        Sheets applies a request whole or not at all, so the refused row is then isolated)."""
        data = []
        start = 0
        for i in range(1, len(writes) + 1):
            if i == len(writes) or writes[i].row != writes[i - 1].row + 1:
                block = writes[start:i]
                cells = f"A{block[0].row}:{tab.last_column}{block[-1].row}"
                data.append(
                    {
                        "range": a1(tab.title, cells),
                        "majorDimension": "ROWS",
                        "values": [w.values for w in block],
                    }
                )
                start = i
        response = self._call(
            "POST",
            f"{self.path}/values:batchUpdate",
            json={"valueInputOption": "RAW", "data": data},
        )
        if response.status_code == 400:
            return google_message(response)
        if not response.is_success:
            reason = google_message(response)
            for w in writes:
                out.rejected[w.key] = reason
            return None
        response.json()  # an unreadable answer confirms nothing (the engine rejects the batch)
        for w in writes:
            tab.rows[w.key] = w.row
        return None

    def _delete(self, tab: _Tab, keys: list[str], out: BatchResult) -> None:
        """Delete the records' rows in one request, bottom-up, adjacent rows as one range. A key
        with no row is already gone."""
        wait = self.config.backoff_initial_s
        for attempt in range(1, self.config.max_attempts + 1):
            by_row = {tab.rows[k]: k for k in keys if k in tab.rows}
            if not by_row:
                return
            ranges: list[tuple[int, int]] = []  # (first, last) rows, from the bottom up
            for row in sorted(by_row, reverse=True):
                if ranges and ranges[-1][0] == row + 1:
                    ranges[-1] = (row, ranges[-1][1])
                else:
                    ranges.append((row, row))
            throttled = self.once.throttled
            self.once.exchanges = self.client.exchanges
            try:
                response = self._call(
                    "POST",
                    f"{self.path}:batchUpdate",
                    client=self.once,
                    json={"requests": [self._delete_rows(tab, f, t) for f, t in ranges]},
                )
            except GaveUp as exc:
                if attempt == self.config.max_attempts:
                    raise GoogleSheetsError(
                        f"destination '{self.name}': deleting rows of tab '{tab.title}' failed "
                        f"{attempt} times ({exc.__cause__}); the next run reads the tab again "
                        "and deletes what is still there"
                    ) from exc
                hint = getattr(exc.__cause__, "retry_after_s", None)
                time.sleep(min(hint if hint is not None else wait, self.config.backoff_max_s))
                wait *= 2
                if self.once.throttled == throttled:
                    # Not a 429 (which changes nothing): the answer was lost, and the rows may
                    # be gone. Read what is there now.
                    tab.row_count = int(
                        self._tabs()[tab.title].get("gridProperties", {}).get("rowCount", 0)
                    )
                    self._read_keys(tab)
                continue
            if response.is_success:
                self._forget_rows(tab, list(by_row))
            else:
                reason = google_message(response)
                for key in by_row.values():
                    out.rejected[key] = reason
            return

    @staticmethod
    def _delete_rows(tab: _Tab, first: int, last: int) -> dict[str, Any]:
        return {
            "deleteDimension": {
                "range": {
                    "sheetId": tab.sheet_id,
                    "dimension": "ROWS",
                    "startIndex": first - 1,
                    "endIndex": last,
                }
            }
        }

    @staticmethod
    def _forget_rows(tab: _Tab, deleted: list[int]) -> None:
        """After rows are deleted, every row below moves up by the deletions above it."""
        gone = sorted(deleted)
        gone_set = set(gone)
        tab.rows = {
            k: r - bisect.bisect_left(gone, r) for k, r in tab.rows.items() if r not in gone_set
        }
        tab.next_row -= len(gone)
        tab.row_count -= len(gone)

    def close(self) -> None:
        self.client.close()
        self.once.close()
        self.auth.close()
