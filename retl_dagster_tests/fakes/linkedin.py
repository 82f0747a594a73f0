"""A fake LinkedIn Marketing API, versioned (`/rest`), from LinkedIn's API reference ("DMP
Segment Users", "Conversions API", "Versioning", "Error Handling", "Rate Limits"):

- every call needs `Authorization: Bearer <token>` (else 401 `INVALID_ACCESS_TOKEN`,
  serviceErrorCode 65600), a `LinkedIn-Version` header (missing: 400 `VERSION_MISSING`; not one
  of the versions of the last 12 months: 426 `NONEXISTENT_VERSION`) and
  `X-Restli-Protocol-Version: 2.0.0` (the reference requires it of every Matched Audiences call;
  the fake's 400 text is paraphrased);
- every request is held to what LinkedIn's official client (`linkedin-api-client`) prepares for
  the same Rest.li call (contracts/linkedin.py): a difference is a 400, recorded in
  `contract_failures`;
- `POST /rest/dmpSegments/{id}/users` with `X-RestLi-Method: BATCH_CREATE` and
  `{"elements": [...]}` (at most 5,000; more is a 400) adds (`ADD`) or removes (`REMOVE`)
  members by `userIds` (`SHA256_EMAIL`: 64 hex digits, `SHA512_EMAIL`: 128, `GOOGLE_AID`; one
  of each type) with `firstName`, `lastName`, `title`, `company`, `country`; an unknown
  segment is a 404; a request's removals are applied after its additions (LinkedIn does not
  document an order);
- `POST /rest/conversionEvents` (one event, or BATCH_CREATE of at most 5,000) takes
  `conversion` (`urn:lla:llaPartnerConversion:{id}` of a known rule), `conversionHappenedAt`
  (epoch ms, within the last 90 days), `conversionValue {currencyCode, amount}` (amount a
  decimal string), `eventId` and `user {userIds, userInfo}` (userIds of `SHA256_EMAIL`,
  `LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID`, `ACXIOM_ID`, `ORACLE_MOAT_ID`; without userIds,
  `userInfo` needs firstName and lastName); an event whose (conversion, eventId) was received
  before is dropped as a duplicate (counted in `duplicates`);
- a value of the wrong type or an unknown key anywhere fails the whole request, as Rest.li
  answers input it cannot read: 400 `VALIDATION_FAILED` with `errorDetails.inputErrors` naming
  the field path; a readable element LinkedIn refuses (an email that is no SHA-256 digest, a
  conversion older than 90 days, no user id) fails alone: the answer's `elements[i]` is
  `{"status": 400, "error": {...}}` while the others are `{"status": 201}` (the per-element
  answer of versions since 202502; `all_or_nothing` plays the earlier whole-request refusal).
  Messages are paraphrased;
- too many requests in the rolling window: 429 `TOO_MANY_REQUESTS` (serviceErrorCode 101);
- `GET /rest/dmpSegments/{id}` and `GET /rest/conversions/{id}?account=urn:li:sponsoredAccount:
  {a}` read a segment or a rule (`retl check`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import linkedin as contract
from retl_dagster_tests.fakes.base import FakeServer

MAX_ELEMENTS = 5000
MAX_AGE_MS = 90 * 24 * 3600 * 1000
RULE_URN = "urn:lla:llaPartnerConversion:"
SEGMENT_ID_TYPES = {"SHA256_EMAIL": 64, "SHA512_EMAIL": 128, "GOOGLE_AID": None}
CONVERSION_ID_TYPES = {
    "SHA256_EMAIL": 64,
    "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID": None,
    "ACXIOM_ID": None,
    "ORACLE_MOAT_ID": None,
}
USER_KEYS = {"action", "userIds", "firstName", "lastName", "title", "company", "country"}
EVENT_KEYS = {"conversion", "conversionHappenedAt", "conversionValue", "eventId", "user"}
INFO_KEYS = {"firstName", "lastName", "companyName", "title", "countryCode"}
_HEX = re.compile(r"^[0-9a-f]+$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def error(
    status: int, message: str, code: str | None = None, service: int | None = None
) -> Response:
    body: dict[str, Any] = {"status": status, "message": message}
    if code:
        body["code"] = code
    if service is not None:
        body["serviceErrorCode"] = service
    return _json(status, body)


def _active(version: str, today: dt.date) -> bool:
    m = re.fullmatch(r"(\d{4})(\d{2})(\.\d{2})?", version)
    if not m or not 1 <= int(m[2]) <= 12:
        return False
    months = today.year * 12 + today.month - (int(m[1]) * 12 + int(m[2]))
    return 0 <= months < 12


class FakeLinkedIn(FakeServer):
    url_map = Map(
        [
            Rule("/rest/dmpSegments/<segment>/users", endpoint="post_users", methods=["POST"]),
            Rule("/rest/dmpSegments/<segment>", endpoint="get_segment", methods=["GET"]),
            Rule("/rest/conversionEvents", endpoint="post_conversions", methods=["POST"]),
            Rule("/rest/conversions/<rule>", endpoint="get_rule", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        token: str,
        segments: tuple[str, ...] = (),
        rules: tuple[str, ...] = (),
        account: str = "500100",
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        # Polled every 50 ms (not serve_forever's 500 ms), so each test's shutdown is quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.token = token
        self.account = account
        self.rules = set(rules)
        self.members: dict[str, set[tuple[str, str]]] = {s: set() for s in segments}
        """segment -> (idType, idValue) of its members."""
        self.details: dict[tuple[str, str], dict[str, Any]] = {}
        """(idType, idValue) -> the details the last ADD sent with it."""
        self.events: list[dict[str, Any]] = []
        self.duplicates = 0
        self.sizes: list[int] = []
        """Elements of each BATCH_CREATE that got past the request checks."""
        self.contract_failures: list[list[str]] = []
        self._seen: set[tuple[str, str]] = set()
        self.all_or_nothing = False
        """True: a refused element fails its whole request (versions before 202502)."""

    @property
    def api_url(self) -> str:
        return f"{self.url}/rest"

    def rate_limited(self, request: Request) -> Response:
        return error(
            429,
            "Resource level throttle APPLICATION MINUTE limit for calls to this resource is "
            "reached.",
            "TOO_MANY_REQUESTS",
            101,
        )

    # -- what every call must carry ------------------------------------------------------------
    def _gate(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600)
        version = request.headers.get("LinkedIn-Version")
        if not version:
            return error(
                400,
                "A version must be present. Please specify a version by adding the "
                "LinkedIn-Version header.",
                "VERSION_MISSING",
            )
        if not _active(version, dt.datetime.now(dt.UTC).date()):
            return error(426, f"Requested version {version} is not active", "NONEXISTENT_VERSION")
        if request.headers.get("X-Restli-Protocol-Version") != "2.0.0":
            return error(400, "This API requires the header X-Restli-Protocol-Version: 2.0.0")
        body = request.get_json(silent=True) if request.method == "POST" else None
        query = request.query_string.decode()
        if found := contract.problems(
            request.method, request.path, query, dict(request.headers), body
        ):
            self.contract_failures.append(found)
            return error(400, "; ".join(found[:5]), "INVALID_REQUEST")
        return None

    def _elements(self, request: Request) -> tuple[list[Any], bool] | Response:
        """The request's elements and whether it is a BATCH_CREATE."""
        body = request.get_json(silent=True)
        if request.headers.get("X-RestLi-Method") == "BATCH_CREATE":
            if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
                return error(400, 'A BATCH_CREATE body must be {"elements": [...]}')
            elements = body["elements"]
            if len(elements) > MAX_ELEMENTS:
                return error(
                    400,
                    f"The batch holds {len(elements)} elements; at most {MAX_ELEMENTS} are "
                    "allowed in one request.",
                    "BATCH_SIZE_EXCEEDED",
                )
            return elements, True
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object")
        return [body], False

    @staticmethod
    def _invalid(problems: list[tuple[str, str]]) -> Response:
        return _json(
            400,
            {
                "status": 400,
                "code": "VALIDATION_FAILED",
                "errorDetailType": "com.linkedin.common.error.BadRequest",
                "message": "Multiple errors occurred during the input validation. Please see "
                "errorDetails for more information.",
                "errorDetails": {
                    "inputErrors": [
                        {
                            "code": "INVALID_VALUE",
                            "description": text,
                            "input": {"inputPath": {"fieldPath": path}},
                        }
                        for path, text in problems
                    ]
                },
            },
        )

    def _whole(self, failures: list[str | None]) -> Response | None:
        """`all_or_nothing`: the first refused element fails the whole request, nothing of it
        applied (the BATCH_CREATE behaviour of versions before 202502)."""
        if not self.all_or_nothing:
            return None
        for i, reason in enumerate(failures):
            if reason is not None:
                return self._invalid([(f"/elements/{i}", reason)])
        return None

    @staticmethod
    def _answer(failures: list[str | None], batch: bool) -> Response:
        if not batch:
            return Response(status=201) if failures[0] is None else error(400, failures[0])
        return _json(
            200,
            {
                "elements": [
                    {"status": 201}
                    if reason is None
                    else {
                        "status": 400,
                        "error": {"status": 400, "code": "INVALID_INPUT", "message": reason},
                    }
                    for reason in failures
                ]
            },
        )

    # -- schema: a value Rest.li cannot read fails the whole request ---------------------------
    @staticmethod
    def _user_ids_schema(
        where: str, ids: Any, types: dict[str, int | None]
    ) -> list[tuple[str, str]]:
        if not isinstance(ids, list):
            return [(where, "must be an array")]
        out = []
        for j, uid in enumerate(ids):
            at = f"{where}/{j}"
            if not isinstance(uid, dict) or set(uid) != {"idType", "idValue"}:
                out.append((at, "must be {idType, idValue}"))
            elif uid["idType"] not in types:
                out.append((f"{at}/idType", f"'{uid['idType']}' is not a valid idType"))
            elif not isinstance(uid["idValue"], str):
                out.append((f"{at}/idValue", "must be a string"))
        return out

    @staticmethod
    def _strings(where: str, obj: dict[str, Any], keys: set[str]) -> list[tuple[str, str]]:
        return [
            (f"{where}/{k}", "unrecognized field")
            if k not in keys
            else (f"{where}/{k}", "must be a string")
            for k, v in obj.items()
            if k not in keys or not isinstance(v, str)
        ]

    def _user_schema(self, i: int, el: Any) -> list[tuple[str, str]]:
        where = f"/elements/{i}"
        if not isinstance(el, dict):
            return [(where, "must be an object")]
        out = [(f"{where}/{k}", "unrecognized field") for k in el if k not in USER_KEYS]
        if el.get("action") not in ("ADD", "REMOVE"):
            out.append((f"{where}/action", "must be ADD or REMOVE"))
        out += self._user_ids_schema(f"{where}/userIds", el.get("userIds"), SEGMENT_ID_TYPES)
        details = {k: v for k, v in el.items() if k in USER_KEYS - {"action", "userIds"}}
        out += self._strings(where, details, USER_KEYS)
        return out

    def _event_schema(self, i: int, ev: Any) -> list[tuple[str, str]]:
        where = f"/elements/{i}"
        if not isinstance(ev, dict):
            return [(where, "must be an object")]
        out = [(f"{where}/{k}", "unrecognized field") for k in ev if k not in EVENT_KEYS]
        for key in ("conversion", "conversionHappenedAt", "user"):
            if key not in ev:
                out.append((f"{where}/{key}", "is required"))
        if "conversion" in ev and not isinstance(ev["conversion"], str):
            out.append((f"{where}/conversion", "must be a URN string"))
        at = ev.get("conversionHappenedAt")
        if "conversionHappenedAt" in ev and (isinstance(at, bool) or not isinstance(at, int)):
            out.append((f"{where}/conversionHappenedAt", "must be epoch milliseconds (a long)"))
        if "eventId" in ev and not isinstance(ev["eventId"], str):
            out.append((f"{where}/eventId", "must be a string"))
        value = ev.get("conversionValue")
        if value is not None:
            if not isinstance(value, dict) or set(value) != {"currencyCode", "amount"}:
                out.append((f"{where}/conversionValue", "must be {currencyCode, amount}"))
            else:
                out += self._strings(f"{where}/conversionValue", value, {"currencyCode", "amount"})
        user = ev.get("user")
        if "user" in ev:
            if not isinstance(user, dict):
                out.append((f"{where}/user", "must be an object"))
                return out
            out += [
                (f"{where}/user/{k}", "unrecognized field")
                for k in user
                if k not in ("userIds", "userInfo")
            ]
            out += self._user_ids_schema(
                f"{where}/user/userIds", user.get("userIds", []), CONVERSION_ID_TYPES
            )
            info = user.get("userInfo")
            if info is not None:
                if not isinstance(info, dict):
                    out.append((f"{where}/user/userInfo", "must be an object"))
                else:
                    out += self._strings(f"{where}/user/userInfo", info, INFO_KEYS)
        return out

    # -- rules of readable elements: each refused alone ------------------------------------------
    @staticmethod
    def _ids_refused(ids: list[dict[str, str]], types: dict[str, int | None]) -> str | None:
        seen: set[str] = set()
        for uid in ids:
            kind, value = uid["idType"], uid["idValue"]
            if kind in seen:
                return f"userIds may hold one id of each idType; {kind} appears twice"
            seen.add(kind)
            length = types[kind]
            if length and (len(value) != length or not _HEX.match(value)):
                return (
                    f"idValue of {kind} must be a HEX encoded string with length = {length}: "
                    "hash the normalized value"
                )
            if not value.strip():
                return f"idValue of {kind} is empty"
        return None

    def _event_refused(self, ev: dict[str, Any], now_ms: int) -> str | None:
        rule = ev["conversion"].removeprefix(RULE_URN)
        if not ev["conversion"].startswith(RULE_URN) or rule not in self.rules:
            return (
                f"Conversion rule {ev['conversion']} does not exist or is not a CONVERSIONS_API "
                "rule"
            )
        happened = ev["conversionHappenedAt"]
        if happened < now_ms - MAX_AGE_MS:
            return (
                "conversionHappenedAt must be within the past 90 days: the conversion happened "
                f"{(now_ms - happened) // 86_400_000} days ago"
            )
        if happened > now_ms + 3_600_000:
            return "conversionHappenedAt is in the future"
        value = ev.get("conversionValue")
        if value is not None:
            if not re.fullmatch(r"[A-Z]{3}", value["currencyCode"]):
                return f"currencyCode '{value['currencyCode']}' is not an ISO 4217 code"
            if not _DECIMAL.match(value["amount"]):
                return f"amount '{value['amount']}' is not a decimal number"
        user = ev["user"]
        ids = user.get("userIds") or []
        if refused := self._ids_refused(ids, CONVERSION_ID_TYPES):
            return refused
        info = user.get("userInfo") or {}
        if not ids and not (info.get("firstName") and info.get("lastName")):
            return (
                "user must have at least one userId, or userInfo with both firstName and lastName"
            )
        return None

    # -- endpoints ------------------------------------------------------------------------------
    def post_users(self, request: Request, segment: str) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        if segment not in self.members:
            return error(404, f"DMP segment {segment} does not exist", "NOT_FOUND")
        got = self._elements(request)
        if isinstance(got, Response):
            return got
        elements, batch = got
        problems = [p for i, el in enumerate(elements) for p in self._user_schema(i, el)]
        if problems:
            return self._invalid(problems)
        self.sizes.append(len(elements))
        failures = [
            self._ids_refused(el["userIds"], SEGMENT_ID_TYPES)
            or (None if el["userIds"] else "userIds must hold at least one user id")
            for el in elements
        ]
        if (refused := self._whole(failures)) is not None:
            return refused
        # LinkedIn does not say in which order it applies a request's elements: the fake applies
        # the removals last, the order in which a batch that both adds and removes an id loses it.
        applied = sorted(
            zip(elements, failures, strict=True), key=lambda p: p[0]["action"] != "ADD"
        )
        for el, reason in applied:
            if reason is not None:
                continue
            pairs = {(u["idType"], u["idValue"]) for u in el["userIds"]}
            if el["action"] == "ADD":
                self.members[segment] |= pairs
                extra = {k: v for k, v in el.items() if k not in ("action", "userIds")}
                for pair in pairs:
                    self.details[pair] = extra
            else:
                self.members[segment] -= pairs
        return self._answer(failures, batch)

    def post_conversions(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        got = self._elements(request)
        if isinstance(got, Response):
            return got
        elements, batch = got
        problems = [p for i, ev in enumerate(elements) for p in self._event_schema(i, ev)]
        if problems:
            return self._invalid(problems)
        self.sizes.append(len(elements))
        now_ms = int(time.time() * 1000)
        failures = [self._event_refused(ev, now_ms) for ev in elements]
        if (refused := self._whole(failures)) is not None:
            return refused
        for ev, reason in zip(elements, failures, strict=True):
            if reason is not None:
                continue
            dedup = (ev["conversion"], str(ev.get("eventId")))
            if ev.get("eventId") and dedup in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(dedup)
            self.events.append(ev)
        return self._answer(failures, batch)

    def get_segment(self, request: Request, segment: str) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        if segment not in self.members:
            return error(404, f"DMP segment {segment} does not exist", "NOT_FOUND")
        return _json(
            200,
            {
                "id": int(segment),
                "name": "Fake segment",
                "account": f"urn:li:sponsoredAccount:{self.account}",
                "type": "USER",
                "destinations": [{"destination": "LINKEDIN", "status": "READY"}],
            },
        )

    def get_rule(self, request: Request, rule: str) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        account = f"urn:li:sponsoredAccount:{self.account}"
        if rule not in self.rules or request.args.get("account") != account:
            return error(
                404, f"Conversion {rule} of {request.args.get('account')} not found", "NOT_FOUND"
            )
        return _json(
            200,
            {
                "id": int(rule),
                "name": "Fake rule",
                "account": account,
                "conversionMethod": "CONVERSIONS_API",
                "enabled": True,
                "type": "PURCHASE",
            },
        )

    # -- what tests read -----------------------------------------------------------------------
    def segment(self, segment: str, id_type: str = "SHA256_EMAIL") -> set[str]:
        return {value for kind, value in self.members[segment] if kind == id_type}
