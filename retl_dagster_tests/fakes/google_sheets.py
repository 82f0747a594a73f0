"""A fake Google: the OAuth 2.0 token endpoint for service accounts and the Sheets API v4, from
developers.google.com (Using OAuth 2.0 for Server to Server Applications; Sheets API reference:
spreadsheets.get / batchUpdate, spreadsheets.values get / update / append / clear / batchUpdate;
Usage limits):

- `POST /token`, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: the assertion's RS256
  signature is checked against the service account's public key; `iss` must be a known account,
  `aud` this token URL, `scope` present, `exp - iat` at most one hour and not past, else 400
  `invalid_grant` with Google's description. Answers `access_token`, `expires_in`, `token_type`;
- every Sheets call needs `Authorization: Bearer <unexpired token>`, else 401 UNAUTHENTICATED; a
  token without the spreadsheets scope gets 403 (insufficient scopes); a spreadsheet not shared
  with the account 403 PERMISSION_DENIED; an unknown spreadsheet 404 NOT_FOUND;
- `spreadsheets.batchUpdate` with addSheet, appendDimension, deleteDimension and
  updateSheetProperties, applied atomically (all or nothing), replies in request order;
- values get / update / append / clear / batchUpdate on A1 ranges (`'Tab'!A1:C5`, `A:A`, `1:1`,
  `A2:C`), `valueInputOption` required on writes; RAW values stored as sent; `null` leaves a
  cell alone and `""` empties it; reads omit trailing empty rows and cells;
- 400 INVALID_ARGUMENT with Google's messages: a range it cannot parse, a range or write outside
  the grid (stricter than Google where its docs are silent: the client must grow the grid), more
  values than the range holds, a cell over 50,000 characters, an object as a value, and any change
  that takes the spreadsheet over its cell limit (10 million, counting empty cells of the grid);
- `lose_answers`: a request applied whose answer is then lost (503), as a timeout would;
- read and write quotas per rolling window (per minute per user at Google; set them low in
  tests): 429 RESOURCE_EXHAUSTED, nothing applied;
- every Sheets request (query parameters and body) is checked against the discovery document's
  schema for its method (contracts/google_sheets.py): one that fails gets 400 INVALID_ARGUMENT
  and is kept in `contract_errors`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.google_sheets import ContractError, check_request
from retl_dagster_tests.fakes.base import FakeServer

SCOPE = "https://www.googleapis.com/auth/spreadsheets"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CELL_LIMIT = 10_000_000
MAX_CELL_CHARS = 50_000
MAX_COLUMNS = 18_278
_REF = re.compile(r"^([A-Za-z]{0,3})([0-9]*)$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json; charset=UTF-8")


_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
_STATUS |= {404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def _error(code: int, message: str) -> Response:
    return _json(code, {"error": {"code": code, "message": message, "status": _STATUS[code]}})


class BadRequest(Exception):
    """Becomes Google's 400 INVALID_ARGUMENT."""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def column_number(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n


def column_letters(n: int) -> str:
    out = ""
    while n:
        n, rem = divmod(n - 1, 26)
        out = chr(65 + rem) + out
    return out


def _quoted(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


@dataclass
class Sheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = 1000
    column_count: int = 26
    cells: list[list[Any]] = field(default_factory=list)
    """Row-major and ragged: a missing row or cell is empty (None)."""

    def properties(self) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }

    def set(self, r: int, c: int, value: Any) -> None:
        while len(self.cells) <= r:
            self.cells.append([])
        row = self.cells[r]
        if value is None and c >= len(row):
            return
        while len(row) <= c:
            row.append(None)
        row[c] = value

    def get(self, r: int, c: int) -> Any:
        if r < len(self.cells) and c < len(self.cells[r]):
            return self.cells[r][c]
        return None

    def last_filled_row(self, c0: int, c1: int) -> int:
        """0-based index of the last row with a value in columns [c0, c1), -1 if none."""
        for r in range(len(self.cells) - 1, -1, -1):
            if any(v not in (None, "") for v in self.cells[r][c0:c1]):
                return r
        return -1


@dataclass
class GridRange:
    sheet: Sheet
    r0: int
    c0: int
    r1: int | None
    """Exclusive; None: to the end of the grid."""
    c1: int | None

    def rows_end(self) -> int:
        return self.sheet.row_count if self.r1 is None else self.r1

    def cols_end(self) -> int:
        return self.sheet.column_count if self.c1 is None else self.c1

    def a1(self, r_end: int | None = None, c_end: int | None = None) -> str:
        r_end = self.rows_end() if r_end is None else r_end
        c_end = self.cols_end() if c_end is None else c_end
        return (
            f"{_quoted(self.sheet.title)}!{column_letters(self.c0 + 1)}{self.r0 + 1}:"
            f"{column_letters(max(c_end, self.c0 + 1))}{max(r_end, self.r0 + 1)}"
        )


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    sheets: list[Sheet]
    shared_with: set[str]

    def cells(self) -> int:
        return sum(s.row_count * s.column_count for s in self.sheets)


@dataclass
class Token:
    email: str
    scope: str
    expires_at: float


class FakeGoogleSheets(FakeServer):
    url_map = Map(
        [
            Rule("/token", endpoint="token", methods=["POST"]),
            Rule("/v4/spreadsheets/<path:rest>", endpoint="sheets", methods=["GET", "POST", "PUT"]),
        ]
    )

    def __init__(
        self, accounts: dict[str, rsa.RSAPublicKey], spreadsheet_id: str, owner: str
    ) -> None:
        """`accounts`: service account email -> its public key; the spreadsheet (one tab,
        Sheet1, like a new one) is shared with `owner`."""
        super().__init__()
        self.accounts = accounts
        self.spreadsheets = {
            spreadsheet_id: Spreadsheet(
                spreadsheet_id, "Reverse ETL", [Sheet(0, "Sheet1", 0)], {owner}
            )
        }
        self.cell_limit = CELL_LIMIT
        self.token_lifetime_s = 3599
        self.tokens: dict[str, Token] = {}
        self.issued: list[str] = []
        """Every access token handed out (for tests that look for leaks)."""
        self.assertions: list[str] = []
        """Every signed JWT received."""
        self.read_quota: int | None = None
        self.write_quota: int | None = None
        self.quota_window_s = 60.0
        self._reads: deque[float] = deque()
        self._writes: deque[float] = deque()
        self.expire_tokens_after: int | None = None
        """After this many more authorised Sheets calls, every token issued so far expires."""
        self.lose_answers: dict[str, int] = {}
        """Method kind -> how many of its next successful requests are applied and then
        answered 503 (an answer lost on the way back)."""
        self.calls: list[tuple[str, int]] = []
        """(method kind, HTTP status) of each request, e.g. ("values.batchUpdate", 200)."""
        self._next_sheet_id = 1000
        self.contract_errors: list[str] = []
        """Every request the discovery document refused (tests assert it stays empty)."""

    # -- helpers for tests --------------------------------------------------------------------
    def sheet(self, title: str, spreadsheet_id: str | None = None) -> Sheet:
        ss = self._only(spreadsheet_id)
        return next(s for s in ss.sheets if s.title == title)

    def table(self, title: str, spreadsheet_id: str | None = None) -> list[list[Any]]:
        """The tab's values as a reader sees them: trailing empty cells and rows left out."""
        rows = [self._trim(list(r)) for r in self.sheet(title, spreadsheet_id).cells]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def count_calls(self, kind: str, status: int | None = None) -> int:
        return sum(1 for k, s in self.calls if k == kind and status in (None, s))

    def _only(self, spreadsheet_id: str | None) -> Spreadsheet:
        if spreadsheet_id is None:
            [ss] = self.spreadsheets.values()
            return ss
        return self.spreadsheets[spreadsheet_id]

    @staticmethod
    def _trim(row: list[Any]) -> list[Any]:
        while row and row[-1] in (None, ""):
            row.pop()
        return ["" if v is None else v for v in row]

    # -- OAuth --------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        self.calls.append(("token", 0))
        grant = request.form.get("grant_type")
        if grant != JWT_BEARER:
            return self._oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        self.assertions.append(request.form.get("assertion", ""))
        problem = self._check_assertion(self.assertions[-1])
        if isinstance(problem, tuple):
            return self._oauth_error(*problem)
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = Token(
            problem["iss"], problem["scope"], time.monotonic() + self.token_lifetime_s
        )
        self.issued.append(token)
        self.calls[-1] = ("token", 200)
        return _json(
            200,
            {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"},
        )

    def _oauth_error(self, error: str, description: str) -> Response:
        self.calls[-1] = ("token", 400)
        return _json(400, {"error": error, "error_description": description})

    def _check_assertion(self, assertion: str) -> dict[str, Any] | tuple[str, str]:
        """The assertion's claims, or (error, description) as Google words them."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return ("invalid_request", "Invalid JWT format.")
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
            signature = _b64url(parts[2])
        except ValueError:
            return ("invalid_request", "Invalid JWT format.")
        if header.get("alg") != "RS256":
            return ("invalid_grant", "Invalid JWT: the signing algorithm must be RS256.")
        key = self.accounts.get(str(claims.get("iss")))
        if key is None:
            return ("invalid_grant", "Invalid grant: account not found")
        try:
            key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return ("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != f"{self.url}/token":
            return (
                "invalid_grant",
                f"Invalid JWT: Failed audience check. The right audience is {self.url}/token.",
            )
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > 3600
            or exp < now
            or iat > now + 60
        ):
            return (
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        if not claims.get("scope"):
            return ("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return claims

    # -- Sheets: dispatch ---------------------------------------------------------------------
    def sheets(self, request: Request, rest: str) -> Response:
        sid, _, tail = rest.partition("/")
        verb = ""
        if not tail and ":" in sid:
            sid, verb = sid.split(":", 1)
        kind = self._kind(request.method, verb, tail)
        self.calls.append((kind, 0))
        response = self._sheets(request, sid, kind, tail)
        if response.status_code == 200 and self.lose_answers.get(kind):
            self.lose_answers[kind] -= 1
            response = _error(503, "The service is currently unavailable.")
        self.calls[-1] = (kind, response.status_code)
        return response

    @staticmethod
    def _kind(method: str, verb: str, tail: str) -> str:
        if not tail:
            return "batchUpdate" if verb == "batchUpdate" else "get"
        if tail.startswith("values:"):
            return "values." + tail.split(":", 1)[1]
        for suffix in ("append", "clear"):
            if tail.endswith(":" + suffix):
                return f"values.{suffix}"
        return {"GET": "values.get", "PUT": "values.update"}.get(method, "unknown")

    def _authorise(self, request: Request, ss: Spreadsheet | None) -> Response | None:
        auth = request.headers.get("Authorization", "")
        token = (
            self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        )
        if token is None or token.expires_at < time.monotonic():
            return _error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            )
        if SCOPE not in token.scope.split():
            return _error(403, "Request had insufficient authentication scopes.")
        if ss is not None and token.email not in ss.shared_with:
            return _error(403, "The caller does not have permission")
        if self.expire_tokens_after is not None:
            self.expire_tokens_after -= 1
            if self.expire_tokens_after <= 0:
                self.expire_tokens_after = None
                for t in self.tokens.values():
                    t.expires_at = 0.0
        return None

    def _over_quota(self, write: bool) -> Response | None:
        limit = self.write_quota if write else self.read_quota
        hits = self._writes if write else self._reads
        if limit is None:
            return None
        now = time.monotonic()
        while hits and now - hits[0] > self.quota_window_s:
            hits.popleft()
        if len(hits) >= limit:
            what = "Write" if write else "Read"
            return _error(
                429,
                f"Quota exceeded for quota metric '{what} requests' and limit '{what} requests "
                "per minute per user' of service 'sheets.googleapis.com' for consumer "
                "'project_number:123456789012'.",
            )
        hits.append(now)
        return None

    def _sheets(self, request: Request, sid: str, kind: str, tail: str) -> Response:
        ss = self.spreadsheets.get(sid)
        denied = self._authorise(request, ss)
        if denied is not None:
            return denied
        if ss is None:
            return _error(404, "Requested entity was not found.")
        throttled = self._over_quota(write=request.method != "GET")
        if throttled is not None:
            return throttled
        body = request.get_json(silent=True) if request.method != "GET" else None
        if kind != "unknown":
            try:
                check_request(kind, body, request.args.to_dict())
            except ContractError as exc:
                self.contract_errors.append(f"{kind}: {exc}")
                return _error(400, f"Invalid JSON payload received. {exc}")
        body = body if isinstance(body, dict) else {}
        try:
            if kind == "get":
                return _json(
                    200,
                    {
                        "spreadsheetId": ss.spreadsheet_id,
                        "properties": {"title": ss.title},
                        "sheets": [{"properties": s.properties()} for s in ss.sheets],
                    },
                )
            if kind == "batchUpdate":
                return self._batch_update(ss, body)
            if kind == "values.batchUpdate":
                return self._values_batch_update(ss, request, body)
            if kind == "unknown":
                return _error(404, "Requested entity was not found.")
            range_text = tail.removeprefix("values/")
            if kind in ("values.append", "values.clear"):
                range_text = range_text.rsplit(":", 1)[0]
            if kind == "values.get":
                return self._values_get(ss, request, range_text)
            if kind == "values.update":
                return self._values_update(ss, request, range_text, body)
            if kind == "values.append":
                return self._values_append(ss, request, range_text, body)
            return self._values_clear(ss, range_text)
        except BadRequest as exc:
            return _error(400, str(exc))

    # -- ranges and values --------------------------------------------------------------------
    def parse_range(
        self, ss: Spreadsheet, text: str, sheets: list[Sheet] | None = None
    ) -> GridRange:
        sheets = ss.sheets if sheets is None else sheets
        titles = {s.title: s for s in sheets}
        if text.startswith("'"):
            name, i = "", 1
            while i < len(text):
                if text[i] == "'":
                    if text[i + 1 : i + 2] == "'":
                        name, i = name + "'", i + 2
                        continue
                    break
                name, i = name + text[i], i + 1
            rest = text[i + 1 :]
            if rest and not rest.startswith("!"):
                raise BadRequest(f"Unable to parse range: {text}")
            sheet, cells = titles.get(name), rest[1:]
        elif "!" in text:
            name, cells = text.split("!", 1)
            sheet = titles.get(name)
        elif text in titles:
            sheet, cells = titles[text], ""
        else:
            sheet, cells = (sheets[0] if sheets else None), text
        if sheet is None:
            raise BadRequest(f"Unable to parse range: {text}")
        if not cells:
            return GridRange(sheet, 0, 0, None, None)
        parts = cells.split(":")
        refs = []
        for part in parts:
            m = _REF.match(part)
            if len(parts) > 2 or m is None or not (m.group(1) or m.group(2)):
                raise BadRequest(f"Unable to parse range: {text}")
            refs.append((m.group(1), m.group(2)))
        if len(refs) == 1:
            (sc, sr), (ec, er) = refs[0], refs[0]
            if not (sc and sr):
                raise BadRequest(f"Unable to parse range: {text}")
        else:
            (sc, sr), (ec, er) = refs
        r0 = int(sr) - 1 if sr else 0
        c0 = column_number(sc) - 1 if sc else 0
        r1 = int(er) if er else None
        c1 = column_number(ec) if ec else None
        if (sr and int(sr) < 1) or (er and int(er) < 1):
            raise BadRequest(f"Unable to parse range: {text}")
        if r1 is not None and r1 <= r0:
            r0, r1 = r1 - 1, r0 + 1
        if c1 is not None and c1 <= c0:
            c0, c1 = c1 - 1, c0 + 1
        grid = GridRange(sheet, r0, c0, r1, c1)
        if grid.rows_end() > sheet.row_count or grid.cols_end() > sheet.column_count:
            raise BadRequest(
                f"Range ({_quoted(sheet.title)}!{cells}) exceeds grid limits. Max rows: "
                f"{sheet.row_count}, max columns: {sheet.column_count}"
            )
        return grid

    @staticmethod
    def _input_option(request: Request, body: dict[str, Any]) -> str:
        option = request.args.get("valueInputOption") or body.get("valueInputOption")
        if option not in ("RAW", "USER_ENTERED"):
            raise BadRequest(
                "'valueInputOption' is required but not specified"
                if not option
                else f"Invalid value at 'value_input_option' ({option})"
            )
        return str(option)

    @staticmethod
    def _check_values(values: Any, option: str, where: str = "") -> list[list[Any]]:
        if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
            raise BadRequest(f"{where}Invalid values: expected a list of lists")
        out = []
        for i, row in enumerate(values):
            cells = []
            for j, v in enumerate(row):
                if isinstance(v, dict | list):
                    kind = "struct_value" if isinstance(v, dict) else "list_value"
                    raise BadRequest(f"{where}Invalid values[{i}][{j}]: {kind} {json.dumps(v)}")
                if isinstance(v, str):
                    if len(v.encode("utf-16-le")) // 2 > MAX_CELL_CHARS:
                        raise BadRequest(
                            f"{where}Your input contains more than the maximum of "
                            f"{MAX_CELL_CHARS} characters in a single cell."
                        )
                    if option == "USER_ENTERED":
                        with contextlib.suppress(ValueError):
                            v = float(v) if v.strip() else v
                cells.append(v)
            out.append(cells)
        return out

    @staticmethod
    def _fits(grid: GridRange, values: list[list[Any]], text: str) -> None:
        rows = len(values)
        cols = max((len(r) for r in values), default=0)
        if grid.r1 is not None and grid.r0 + rows > grid.r1:
            raise BadRequest(
                f"Requested writing within range [{text}], but tried writing to row [{grid.r1 + 1}]"
            )
        if grid.c1 is not None and grid.c0 + cols > grid.c1:
            raise BadRequest(
                f"Requested writing within range [{text}], but tried writing to column "
                f"[{column_letters(grid.c1 + 1)}]"
            )
        sheet = grid.sheet
        if grid.r0 + rows > sheet.row_count or grid.c0 + cols > sheet.column_count:
            raise BadRequest(
                f"Range ({text}) exceeds grid limits. Max rows: {sheet.row_count}, "
                f"max columns: {sheet.column_count}"
            )

    @staticmethod
    def _apply(grid: GridRange, values: list[list[Any]]) -> dict[str, Any]:
        touched_rows, touched_cols, cells = set(), set(), 0
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if v is None:  # null: leave the cell as it is
                    continue
                grid.sheet.set(grid.r0 + i, grid.c0 + j, None if v == "" else v)
                touched_rows.add(i)
                touched_cols.add(j)
                cells += 1
        rows = max((len(values)), 0)
        cols = max((len(r) for r in values), default=0)
        return {
            "updatedRange": grid.a1(grid.r0 + rows, grid.c0 + cols),
            "updatedRows": len(touched_rows),
            "updatedColumns": len(touched_cols),
            "updatedCells": cells,
        }

    def _values_get(self, ss: Spreadsheet, request: Request, text: str) -> Response:
        grid = self.parse_range(ss, text)
        if request.args.get("majorDimension", "ROWS") != "ROWS":
            raise BadRequest("The fake reads majorDimension ROWS only")
        formatted = request.args.get("valueRenderOption", "FORMATTED_VALUE") == "FORMATTED_VALUE"
        rows = []
        for r in range(grid.r0, min(grid.rows_end(), len(grid.sheet.cells))):
            row = self._trim(grid.sheet.cells[r][grid.c0 : grid.cols_end()])
            rows.append([self._formatted(v) for v in row] if formatted else row)
        while rows and not rows[-1]:
            rows.pop()
        body: dict[str, Any] = {"range": grid.a1(), "majorDimension": "ROWS"}
        if rows:
            body["values"] = rows
        return _json(200, body)

    @staticmethod
    def _formatted(v: Any) -> Any:
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    def _values_update(
        self, ss: Spreadsheet, request: Request, text: str, body: dict[str, Any]
    ) -> Response:
        option = self._input_option(request, body)
        grid = self.parse_range(ss, text)
        values = self._check_values(body.get("values", []), option)
        self._fits(grid, values, text)
        return _json(200, {"spreadsheetId": ss.spreadsheet_id, **self._apply(grid, values)})

    def _values_batch_update(
        self, ss: Spreadsheet, request: Request, body: dict[str, Any]
    ) -> Response:
        option = self._input_option(request, body)
        planned = []
        for i, item in enumerate(body.get("data") or []):
            where = f"Invalid data[{i}]: "
            text = str(item.get("range", ""))
            try:
                grid = self.parse_range(ss, text)
                values = self._check_values(item.get("values", []), option)
                self._fits(grid, values, text)
            except BadRequest as exc:
                raise BadRequest(where + str(exc)) from None
            planned.append((grid, values))
        # Checked first, applied after: a refused request changes nothing.
        responses = [{"spreadsheetId": ss.spreadsheet_id, **self._apply(g, v)} for g, v in planned]
        return _json(
            200,
            {
                "spreadsheetId": ss.spreadsheet_id,
                "totalUpdatedRows": sum(r["updatedRows"] for r in responses),
                "totalUpdatedColumns": max((r["updatedColumns"] for r in responses), default=0),
                "totalUpdatedCells": sum(r["updatedCells"] for r in responses),
                "totalUpdatedSheets": len({g.sheet.sheet_id for g, _ in planned}),
                "responses": responses,
            },
        )

    def _values_append(
        self, ss: Spreadsheet, request: Request, text: str, body: dict[str, Any]
    ) -> Response:
        option = self._input_option(request, body)
        grid = self.parse_range(ss, text)
        values = self._check_values(body.get("values", []), option)
        sheet = grid.sheet
        last = sheet.last_filled_row(grid.c0, grid.cols_end())
        start = last + 1
        insert = request.args.get("insertDataOption", "OVERWRITE") == "INSERT_ROWS"
        cols = max((len(r) for r in values), default=0)
        # Appending past the end (or INSERT_ROWS) adds rows to the grid, within the cell limit.
        added = len(values) if insert else max(0, start + len(values) - sheet.row_count)
        wider = max(0, grid.c0 + cols - sheet.column_count)
        if ss.cells() + added * sheet.column_count + wider * (sheet.row_count + added) > (
            self.cell_limit
        ):
            raise BadRequest(self._limit_message())
        if insert:
            sheet.cells[start:start] = [[] for _ in values]
        sheet.row_count += added
        sheet.column_count += wider
        target = GridRange(sheet, start, grid.c0, start + len(values), grid.c0 + cols)
        table = GridRange(sheet, 0, grid.c0, last + 1, grid.cols_end()) if last >= 0 else None
        updates = {"spreadsheetId": ss.spreadsheet_id, **self._apply(target, values)}
        out = {"spreadsheetId": ss.spreadsheet_id, "updates": updates}
        if table is not None:
            out["tableRange"] = table.a1()
        return _json(200, out)

    def _values_clear(self, ss: Spreadsheet, text: str) -> Response:
        grid = self.parse_range(ss, text)
        for r in range(grid.r0, min(grid.rows_end(), len(grid.sheet.cells))):
            row = grid.sheet.cells[r]
            for c in range(grid.c0, min(grid.cols_end(), len(row))):
                row[c] = None
        return _json(200, {"spreadsheetId": ss.spreadsheet_id, "clearedRange": grid.a1()})

    def _limit_message(self) -> str:
        return (
            "This action would increase the number of cells in the workbook above the limit of "
            f"{self.cell_limit} cells."
        )

    # -- spreadsheets.batchUpdate -------------------------------------------------------------
    def _batch_update(self, ss: Spreadsheet, body: dict[str, Any]) -> Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("Must specify at least one request.")
        # Applied to copies (rows shared, lists not), kept only if every request succeeds.
        sheets = [replace(s, cells=list(s.cells)) for s in ss.sheets]
        replies = []
        for i, req in enumerate(requests):
            if not isinstance(req, dict) or len(req) != 1:
                raise BadRequest(f"Invalid requests[{i}]: exactly one kind of request expected")
            [(kind, spec)] = req.items()
            handler = getattr(self, f"_req_{kind}", None)
            if handler is None:
                raise BadRequest(f"Invalid requests[{i}]: the fake does not implement {kind}")
            try:
                replies.append(handler(ss, sheets, spec or {}))
            except BadRequest as exc:
                raise BadRequest(f"Invalid requests[{i}].{kind}: {exc}") from None
            if sum(s.row_count * s.column_count for s in sheets) > self.cell_limit:
                raise BadRequest(f"Invalid requests[{i}].{kind}: {self._limit_message()}")
        ss.sheets = sheets
        return _json(200, {"spreadsheetId": ss.spreadsheet_id, "replies": replies})

    @staticmethod
    def _by_id(sheets: list[Sheet], sheet_id: Any) -> Sheet:
        for s in sheets:
            if s.sheet_id == sheet_id:
                return s
        raise BadRequest(f"No grid with id: {sheet_id}")

    def _req_addSheet(
        self, ss: Spreadsheet, sheets: list[Sheet], spec: dict[str, Any]
    ) -> dict[str, Any]:
        props = spec.get("properties") or {}
        title = props.get("title") or f"Sheet{len(sheets) + 1}"
        if any(s.title == title for s in sheets):
            raise BadRequest(
                f'A sheet with the name "{title}" already exists. Please enter another name.'
            )
        grid = props.get("gridProperties") or {}
        rows, cols = int(grid.get("rowCount", 1000)), int(grid.get("columnCount", 26))
        if rows < 1 or not 1 <= cols <= MAX_COLUMNS:
            raise BadRequest("Invalid gridProperties")
        self._next_sheet_id += 1
        sheet = Sheet(
            int(props.get("sheetId", self._next_sheet_id)), title, len(sheets), rows, cols
        )
        sheets.append(sheet)
        return {"addSheet": {"properties": sheet.properties()}}

    def _req_appendDimension(
        self, ss: Spreadsheet, sheets: list[Sheet], spec: dict[str, Any]
    ) -> dict[str, Any]:
        sheet = self._by_id(sheets, spec.get("sheetId"))
        length = int(spec.get("length", 0))
        if length < 1:
            raise BadRequest("length must be at least 1")
        if spec.get("dimension") == "ROWS":
            sheet.row_count += length
        elif spec.get("dimension") == "COLUMNS":
            if sheet.column_count + length > MAX_COLUMNS:
                raise BadRequest(f"A sheet has at most {MAX_COLUMNS} columns")
            sheet.column_count += length
        else:
            raise BadRequest("dimension must be ROWS or COLUMNS")
        return {}

    def _req_deleteDimension(
        self, ss: Spreadsheet, sheets: list[Sheet], spec: dict[str, Any]
    ) -> dict[str, Any]:
        rng = spec.get("range") or {}
        sheet = self._by_id(sheets, rng.get("sheetId"))
        start, end = int(rng.get("startIndex", 0)), int(rng.get("endIndex", 0))
        if start < 0 or end <= start:
            raise BadRequest("Invalid dimension range: startIndex must be less than endIndex")
        if rng.get("dimension") == "ROWS":
            if end > sheet.row_count:
                raise BadRequest(
                    f"Cannot delete a row that doesn't exist. Tried to delete row index "
                    f"{end - 1} but there are only {sheet.row_count} rows."
                )
            if end - start >= sheet.row_count:
                raise BadRequest("You can't delete all the rows on the sheet.")
            del sheet.cells[start:end]
            sheet.row_count -= end - start
        elif rng.get("dimension") == "COLUMNS":
            if end > sheet.column_count:
                raise BadRequest(
                    f"Cannot delete a column that doesn't exist. Tried to delete column index "
                    f"{end - 1} but there are only {sheet.column_count} columns."
                )
            if end - start >= sheet.column_count:
                raise BadRequest("You can't delete all the columns on the sheet.")
            sheet.cells = [row[:start] + row[end:] for row in sheet.cells]
            sheet.column_count -= end - start
        else:
            raise BadRequest("dimension must be ROWS or COLUMNS")
        return {}

    def _req_updateSheetProperties(
        self, ss: Spreadsheet, sheets: list[Sheet], spec: dict[str, Any]
    ) -> dict[str, Any]:
        props = spec.get("properties") or {}
        sheet = self._by_id(sheets, props.get("sheetId"))
        fields = [f.strip() for f in str(spec.get("fields", "")).split(",") if f.strip()]
        if not fields:
            raise BadRequest("fields is required")
        grid = props.get("gridProperties") or {}
        for f in fields:
            if f == "title":
                title = props.get("title")
                if not title or any(s.title == title for s in sheets if s is not sheet):
                    raise BadRequest(f'A sheet with the name "{title}" already exists.')
                sheet.title = title
            elif f == "gridProperties.rowCount":
                sheet.row_count = int(grid["rowCount"])
                sheet.cells = sheet.cells[: sheet.row_count]
            elif f == "gridProperties.columnCount":
                sheet.column_count = int(grid["columnCount"])
                sheet.cells = [row[: sheet.column_count] for row in sheet.cells]
            else:
                raise BadRequest(f"the fake does not update {f}")
        return {}
