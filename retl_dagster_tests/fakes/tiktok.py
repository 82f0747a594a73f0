"""A fake TikTok Business API (v1.3): the Events API 2.0 and Customer File audiences (DMP).

Every answer is TikTok's envelope `{"code", "message", "request_id", "data"}` with HTTP 200,
whatever happened (code 0: success), with the codes of TikTok's own SDK (`NumericErrorCodes`;
the contract test holds the two together). Messages are paraphrased: TikTok documents the codes,
not every text.

- `Access-Token` missing: 40104; not the token: 40105; an event source or advertiser the token
  cannot reach: 40001. Too many requests in the rolling window: 40100.
- `POST /open_api/v1.3/event/track/`: `event_source` one of web, app, offline, crm, and
  `event_source_id` one the token may send to; `data` 1 to 1,000 events, each with `event` and
  an integer `event_time` (40002 otherwise); `user.email`, `user.phone` and `user.external_id`
  must be SHA-256 digests (40062). One bad event refuses the whole request; nothing of it is
  kept. Events with the event and event_id of one already received are dropped as duplicates
  (`duplicates`); with `test_event_code` they go to `test_events`. Every body is held to the SDK's
  models (contracts/tiktok.py): a break is a 40002, recorded in `contract_failures`.
- `POST /open_api/v1.3/dmp/custom_audience/file/upload/` (multipart): `advertiser_id`,
  `calculate_type` (EMAIL_SHA256, PHONE_SHA256, IDFA_SHA256, GAID_SHA256 or the MD5 kinds of
  the mobile ids; 40002 otherwise), `file` (40906 when empty) whose MD5 is `file_signature`
  (40900 otherwise), one identifier a line in the calculate_type's form (40909 otherwise).
  Answers `{"file_path"}`.
- `POST /open_api/v1.3/dmp/custom_audience/update/`: the SDK's CustomAudienceUpdateBody rules
  (40002), an audience of the advertiser (40002), uploaded `file_paths` (40905) of the
  audience's calculate_type (40909); `action` APPEND, REMOVE or REPLACE, REPLACE when none is
  given. An update that would leave the audience under 1,000 members is refused (40002), as
  TikTok documents. Files apply at once (TikTok takes 24-48 hours).
- `GET /open_api/v1.3/dmp/custom_audience/get/` and `/list/`: `custom_audience_ids` as a JSON
  array (as the SDK sends it); an audience's details carry `cover_num`: its members TikTok
  "knows" (`known`) plus the members it held before the test (`baseline`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import tiktok as contract
from retl_dagster_tests.fakes.base import FakeServer

OK = 0
PERMISSION_ERROR = 40001
PARAM_ERROR = 40002
PII_NOT_HASHED = 40062
REQUEST_TOO_FREQUENT = 40100
EMPTY_ACCESS_TOKEN = 40104
INVALID_ACCESS_TOKEN = 40105
SIGNATURE_ERROR = 40900
FILE_NOT_EXIST = 40905
FILE_EMPTY = 40906
FILE_CALCULATE_TYPE_ERROR = 40909
CODES = {
    "ERROR_CODE_OK": OK,
    "ERROR_CODE_PERMISSION_ERROR": PERMISSION_ERROR,
    "ERROR_CODE_PARAM_ERROR": PARAM_ERROR,
    "ERROR_CODE_PII_NOT_HASHED": PII_NOT_HASHED,
    "ERROR_CODE_REQUEST_TOO_FREQUENT": REQUEST_TOO_FREQUENT,
    "ERROR_CODE_EMPTY_ACCESS_TOKEN": EMPTY_ACCESS_TOKEN,
    "ERROR_CODE_INVALID_ACCESS_TOKEN": INVALID_ACCESS_TOKEN,
    "ERROR_CODE_SIGNATURE_ERROR": SIGNATURE_ERROR,
    "ERROR_CODE_FILE_NOT_EXIST": FILE_NOT_EXIST,
    "ERROR_CODE_FILE_EMPTY": FILE_EMPTY,
    "ERROR_CODE_FILE_CALCULATE_TYPE_ERROR": FILE_CALCULATE_TYPE_ERROR,
}
"""Every code this fake answers, by its name in TikTok's SDK."""

EVENT_SOURCES = ("web", "app", "offline", "crm")
MAX_EVENTS = 1000
MIN_AUDIENCE = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
CALCULATE_TYPES = {
    "EMAIL_SHA256": _SHA256,
    "PHONE_SHA256": _SHA256,
    "IDFA_SHA256": _SHA256,
    "GAID_SHA256": _SHA256,
    "IDFA_MD5": _MD5,
    "GAID_MD5": _MD5,
}
V = "/open_api/v1.3"


@dataclass
class Audience:
    audience_id: str
    name: str
    calculate_type: str
    baseline: int = MIN_AUDIENCE
    """Members it held before the test (other people's files): all matched."""
    members: set[str] = field(default_factory=set)

    def size(self, members: set[str] | None = None) -> int:
        return self.baseline + len(self.members if members is None else members)


@dataclass
class Update:
    audience_id: str
    action: str
    count: int


class FakeTikTok(FakeServer):
    url_map = Map(
        [
            Rule(f"{V}/event/track/", endpoint="event_track", methods=["POST"]),
            Rule(f"{V}/dmp/custom_audience/file/upload/", endpoint="upload", methods=["POST"]),
            Rule(f"{V}/dmp/custom_audience/update/", endpoint="update", methods=["POST"]),
            Rule(f"{V}/dmp/custom_audience/get/", endpoint="audience_get", methods=["GET"]),
            Rule(f"{V}/dmp/custom_audience/list/", endpoint="audience_list", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        access_token: str,
        *,
        event_sources: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
        advertiser_id: str = "",
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.access_token = access_token
        self.reset(event_sources=event_sources, advertiser_id=advertiser_id)

    def reset(
        self, *, event_sources: set[tuple[str, str]] | None = None, advertiser_id: str | None = None
    ) -> None:
        """Forget everything received (a server shared by several tests starts each afresh)."""
        with self.lock:
            if event_sources is not None:
                self.event_sources = set(event_sources)
            if advertiser_id is not None:
                self.advertiser_id = advertiser_id
            self.rate_limit, self.garbage = None, 0
            self.log.clear()
            self._hits.clear()
            self.events: list[dict[str, Any]] = []
            self.test_events: list[dict[str, Any]] = []
            self.duplicates = 0
            self.audiences: dict[str, Audience] = {}
            self.files: dict[str, tuple[str, set[str]]] = {}
            self.updates: list[Update] = []
            self.known: set[str] = set()
            """Digests of people TikTok knows: they count in an audience's cover_num."""
            self.contract_failures: list[list[str]] = []
            self.answers: list[dict[str, Any]] = []
            """Every answer's body, for the envelope's contract check."""
            self._seen: set[tuple[str, str]] = set()

    # -- answers ------------------------------------------------------------------------------
    def answer(self, code: int, message: str = "OK", data: Any = None) -> Response:
        body = {
            "code": code,
            "message": message,
            "request_id": secrets.token_hex(10),
            "data": {} if data is None else data,
        }
        self.answers.append(body)
        return Response(json.dumps(body), status=200, content_type="application/json")

    def rate_limited(self, request: Request) -> Response:
        return self.answer(REQUEST_TOO_FREQUENT, "Too many requests. Please retry later.")

    def _auth(self, request: Request) -> Response | None:
        token = request.headers.get("Access-Token")
        if not token:
            return self.answer(EMPTY_ACCESS_TOKEN, "Access-Token is required in the header.")
        if token != self.access_token:
            return self.answer(
                INVALID_ACCESS_TOKEN, "Access token is incorrect or has been revoked."
            )
        return None

    def _advertiser(self, advertiser_id: Any) -> Response | None:
        if str(advertiser_id) != self.advertiser_id:
            return self.answer(
                PERMISSION_ERROR, f"No permission to operate advertiser {advertiser_id}."
            )
        return None

    def members(self, audience_id: str) -> set[str]:
        return set(self.audiences[audience_id].members)

    # -- Events API 2.0 -----------------------------------------------------------------------
    def _bad_event(self, i: int, event: Any) -> Response | None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            return self.answer(PARAM_ERROR, f"data[{i}].event: Missing data for required field.")
        when = event.get("event_time")
        if not isinstance(when, int) or isinstance(when, bool):
            return self.answer(
                PARAM_ERROR, f"data[{i}].event_time: must be a Unix timestamp in seconds."
            )
        user = event.get("user") or {}
        for key in contract.HASHED_USER:
            value = user.get(key)
            for v in value if isinstance(value, list) else [value]:
                if v is not None and not (isinstance(v, str) and _SHA256.match(v)):
                    return self.answer(
                        PII_NOT_HASHED,
                        f"data[{i}].user.{key}: personal information must be SHA-256 hashed.",
                    )
        return None

    def event_track(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.answer(PARAM_ERROR, "The request body must be JSON.")
        source, source_id = body.get("event_source"), body.get("event_source_id")
        if source not in EVENT_SOURCES:
            return self.answer(
                PARAM_ERROR, f"event_source: must be one of {', '.join(EVENT_SOURCES)}."
            )
        if (source, source_id) not in self.event_sources:
            return self.answer(
                PERMISSION_ERROR, f"No permission to operate {source} event source {source_id}."
            )
        if problems := contract.event_problems(body):
            self.contract_failures.append(problems)
            return self.answer(PARAM_ERROR, "; ".join(problems[:5]))
        data = body["data"]
        if not 1 <= len(data) <= MAX_EVENTS:
            return self.answer(PARAM_ERROR, f"data: length must be between 1 and {MAX_EVENTS}.")
        for i, event in enumerate(data):
            if (bad := self._bad_event(i, event)) is not None:
                return bad
        target = self.test_events if body.get("test_event_code") else self.events
        for event in data:
            dedup = (event["event"], str(event.get("event_id")))
            if event.get("event_id") and dedup in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(dedup)
            target.append(event)
        return self.answer(OK)

    # -- Customer File audiences --------------------------------------------------------------
    def upload(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        form = request.form
        if (refused := self._advertiser(form.get("advertiser_id"))) is not None:
            return refused
        kind = form.get("calculate_type")
        if kind not in CALCULATE_TYPES:
            return self.answer(PARAM_ERROR, f"calculate_type: invalid enum value {kind!r}.")
        upload = request.files.get("file")
        content = upload.read() if upload else b""
        if not content.strip():
            return self.answer(FILE_EMPTY, "The file is empty.")
        if form.get("file_signature") != hashlib.md5(content, usedforsecurity=False).hexdigest():
            return self.answer(SIGNATURE_ERROR, "file_signature does not match the file's MD5.")
        lines = [line.strip() for line in content.decode(errors="replace").splitlines()]
        ids = {line for line in lines if line}
        if not all(CALCULATE_TYPES[kind].match(x) for x in ids):
            return self.answer(
                FILE_CALCULATE_TYPE_ERROR, f"The file's content does not match {kind}."
            )
        path = f"{self.advertiser_id}/{secrets.token_hex(8)}.csv"
        self.files[path] = (kind, ids)
        return self.answer(OK, data={"file_path": path})

    def update(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        body: Any = request.get_json(silent=True)
        if problems := contract.update_problems(body):
            self.contract_failures.append(problems)
            return self.answer(PARAM_ERROR, "; ".join(problems[:5]))
        if (refused := self._advertiser(body["advertiser_id"])) is not None:
            return refused
        audience = self.audiences.get(body["custom_audience_id"])
        if audience is None:
            return self.answer(
                PARAM_ERROR, f"Custom audience {body['custom_audience_id']} does not exist."
            )
        action = body.get("action", "REPLACE")
        ids: set[str] = set()
        for path in body.get("file_paths") or []:
            if path not in self.files:
                return self.answer(FILE_NOT_EXIST, f"File {path} does not exist.")
            kind, content = self.files[path]
            if kind != audience.calculate_type:
                return self.answer(
                    FILE_CALCULATE_TYPE_ERROR,
                    f"The file is {kind}; the audience is {audience.calculate_type}.",
                )
            ids |= content
        after = {
            "APPEND": audience.members | ids,
            "REMOVE": audience.members - ids,
            "REPLACE": set(ids),
        }[action]
        baseline = 0 if action == "REPLACE" else audience.baseline
        if baseline + len(after) < MIN_AUDIENCE:
            return self.answer(
                PARAM_ERROR,
                f"The audience size would be less than {MIN_AUDIENCE} after this operation.",
            )
        audience.members, audience.baseline = after, baseline
        self.updates.append(Update(audience.audience_id, action, len(ids)))
        return self.answer(OK)

    def _details(self, audience: Audience) -> dict[str, Any]:
        return {
            "audience_id": audience.audience_id,
            "name": audience.name,
            "audience_type": "Customer File Audience",
            "calculate_type": audience.calculate_type,
            "cover_num": audience.baseline + len(audience.members & self.known),
            "is_valid": True,
            "is_expiring": False,
            "shared": False,
            "is_creator": True,
        }

    def audience_get(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        if (refused := self._advertiser(request.args.get("advertiser_id"))) is not None:
            return refused
        try:
            ids = json.loads(request.args.get("custom_audience_ids", ""))
        except ValueError:
            ids = None
        if not (isinstance(ids, list) and 1 <= len(ids) <= 100):
            return self.answer(
                PARAM_ERROR, "custom_audience_ids: must be a JSON array of 1 to 100 ids."
            )
        found = [
            {"audience_details": self._details(self.audiences[str(i)]), "audience_history": []}
            for i in ids
            if str(i) in self.audiences
        ]
        return self.answer(OK, data={"list": found})

    def audience_list(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        if (refused := self._advertiser(request.args.get("advertiser_id"))) is not None:
            return refused
        size = int(request.args.get("page_size", 10))
        rows = [self._details(a) for a in self.audiences.values()]
        info = {"page": 1, "page_size": size, "total_number": len(rows), "total_page": 1}
        return self.answer(OK, data={"list": rows[:size], "page_info": info})
