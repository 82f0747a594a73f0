"""A fake Iterable API, real HTTP over loopback, refusing what Iterable refuses. Iterable
publishes no Python SDK (iterable-api and iterablepythonwrapper on PyPI are third parties'), so
the rules below are the contract, taken from Iterable's own TypeScript client
(github.com/Iterable/api-client, src/types/users.ts, events.ts, lists.ts, errors.ts) and block's
Go client (github.com/block/iterable-go, types/shared.go):

- every request needs the project's key in the `Api-Key` header, else 401
  `{"msg": "Invalid API key", "code": "BadApiKey", "params": null}`;
- `POST /api/users/bulkUpdate` `{"users": [...]}`, `POST /api/events/trackBulk` `{"events":
  [...]}`, `POST /api/lists/subscribe` / `unsubscribe` `{"listId", "subscribers": [...]}`: only
  the documented keys, each entry with `email` or `userId`, an event with a non-empty
  `eventName`, an integer `createdAt` (Unix seconds), an `id` of at most 512 characters and
  object `dataFields`; more than `max_records` entries, or a body that breaks these rules, is
  refused whole with 400 `{"msg", "code": "BadParams"}`; so is a `dataFields` value whose type
  differs from the one the project's field already has (Iterable's field type mismatch);
- an entry whose email is not an address is left out and named in the 200 answer:
  `{"successCount", "failCount", "failedUpdates": {"invalidEmails": [...]}}` (the others apply);
  an unsubscribe of a user Iterable does not know is named in `notFoundEmails` / `UserIds`;
- an event with an `id` already stored updates that event (no second one); `lost_answers`
  applies a trackBulk request and answers 502, as when a proxy loses Iterable's answer;
- `GET /api/lists`: `{"lists": [{"id", "name", "listType", "createdAt"}]}`;
- past `rate_limit` requests in `window_s`: 429 `{"code": "RateLimitExceeded"}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USER_KEYS = {"email", "userId", "dataFields", "preferUserId", "mergeNestedObjects"}
EVENT_KEYS = {
    "email",
    "userId",
    "eventName",
    "id",
    "dataFields",
    "campaignId",
    "templateId",
    "createdAt",
    "createNewFields",
}
UNSUBSCRIBER_KEYS = {"email", "userId"}


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, msg: str, code: str) -> Response:
    return _json(status, {"msg": msg, "code": code, "params": None})


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class FakeIterable(FakeServer):
    url_map = Map(
        [
            Rule("/api/users/bulkUpdate", endpoint="bulk_update", methods=["POST"]),
            Rule("/api/events/trackBulk", endpoint="track_bulk", methods=["POST"]),
            Rule("/api/lists/subscribe", endpoint="subscribe", methods=["POST"]),
            Rule("/api/lists/unsubscribe", endpoint="unsubscribe", methods=["POST"]),
            Rule("/api/lists", endpoint="lists_", methods=["GET"]),
        ]
    )

    def __init__(self, api_key: str, max_records: int = 1000) -> None:
        super().__init__()
        self.api_key = api_key
        self.max_records = max_records
        self.users: dict[str, dict[str, Any]] = {}
        """`email:<e>` or `userId:<id>` -> {"email"?, "userId"?, "dataFields": {...}}."""
        self.events: dict[str, dict[str, Any]] = {}
        """Event id -> the event as last sent."""
        self.updated_events = 0
        self.lists: dict[int, set[str]] = {42: set(), 43: set()}
        self.field_types: dict[str, str] = {}
        self.lost_answers = 0
        """The next `lost_answers` trackBulk requests are applied, then answered 502 (a proxy
        that lost Iterable's answer): the client cannot know they arrived."""

    def rate_limited(self, request: Request) -> Response:
        return _error(429, "Rate limit exceeded", "RateLimitExceeded")

    # -- helpers ---------------------------------------------------------------------------
    def _refused(self, request: Request, wrapper: str, keys: set[str]) -> Response | list[Any]:
        if request.headers.get("Api-Key") != self.api_key:
            return _error(401, "Invalid API key", "BadApiKey")
        body = request.get_json(silent=True)
        entries = body.get(wrapper) if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return _error(400, f"'{wrapper}' must be an array", "BadJsonBody")
        if len(entries) > self.max_records:
            return _error(400, f"at most {self.max_records} {wrapper} per request", "BadParams")
        for i, e in enumerate(entries):
            problem = self._entry_problem(e, keys)
            if problem:
                return _error(400, f"{wrapper}[{i}]: {problem}", "BadParams")
        for e in entries:  # Iterable refuses the request whole on a field type mismatch
            for k, v in (e.get("dataFields") or {}).items():
                known = self.field_types.get(k)
                if v is not None and known is not None and known != _type(v):
                    return _error(
                        400,
                        f"Field type mismatch for {k}: expected {known}, got {_type(v)}",
                        "BadParams",
                    )
        return entries

    def _entry_problem(self, e: Any, keys: set[str]) -> str | None:
        if not isinstance(e, dict):
            return "not an object"
        unknown = sorted(set(e) - keys)
        if unknown:
            return f"unknown fields: {', '.join(unknown)}"
        if not e.get("email") and not e.get("userId"):
            return "Either email or userId must be provided"
        if "dataFields" in e and not isinstance(e["dataFields"], dict):
            return "dataFields must be an object"
        if "eventName" in keys:
            if not isinstance(e.get("eventName"), str) or not e["eventName"]:
                return "eventName is required"
            created = e.get("createdAt")
            if created is not None and (not isinstance(created, int) or isinstance(created, bool)):
                return "createdAt must be a Unix timestamp (an integer of seconds)"
            if "id" in e and (not isinstance(e["id"], str) or not 1 <= len(e["id"]) <= 512):
                return "id must be a string of 1 to 512 characters"
        return None

    @staticmethod
    def _who(e: dict[str, Any]) -> str:
        return f"email:{e['email'].lower()}" if e.get("email") else f"userId:{e['userId']}"

    def _answer(self, ok: int, failed: dict[str, list[str]]) -> Response:
        named = {k: v for k, v in failed.items() if v}
        count = sum(len(v) for v in named.values())
        return _json(200, {"successCount": ok, "failCount": count, "failedUpdates": named})

    def _invalid(self, e: dict[str, Any], failed: dict[str, list[str]]) -> bool:
        if e.get("email") and not _EMAIL.match(str(e["email"])):
            failed.setdefault("invalidEmails", []).append(e["email"])
            return True
        return False

    def _upsert(self, e: dict[str, Any]) -> str:
        who = self._who(e)
        user = self.users.setdefault(who, {"dataFields": {}})
        for k in ("email", "userId"):
            if e.get(k):
                user[k] = e[k]
        for k, v in (e.get("dataFields") or {}).items():
            user["dataFields"][k] = v
            if v is not None:
                self.field_types.setdefault(k, _type(v))
        return who

    # -- endpoints -------------------------------------------------------------------------
    def bulk_update(self, request: Request) -> Response:
        entries = self._refused(request, "users", USER_KEYS)
        if isinstance(entries, Response):
            return entries
        failed: dict[str, list[str]] = {}
        ok = 0
        for e in entries:
            if not self._invalid(e, failed):
                self._upsert(e)
                ok += 1
        return self._answer(ok, failed)

    def track_bulk(self, request: Request) -> Response:
        entries = self._refused(request, "events", EVENT_KEYS)
        if isinstance(entries, Response):
            return entries
        failed: dict[str, list[str]] = {}
        ok = 0
        for e in entries:
            if self._invalid(e, failed):
                continue
            self._upsert({k: e[k] for k in ("email", "userId") if k in e})
            key = e.get("id") or f"auto{len(self.events)}"
            if key in self.events:
                self.updated_events += 1
            self.events[key] = e
            ok += 1
        if self.lost_answers:
            self.lost_answers -= 1
            return Response("<html>502 Bad Gateway</html>", status=502)
        return self._answer(ok, failed)

    def _list(self, request: Request) -> int | Response:
        body = request.get_json(silent=True) or {}
        lid = body.get("listId")
        if not isinstance(lid, int) or isinstance(lid, bool):
            return _error(400, "listId must be an integer", "BadParams")
        if lid not in self.lists:
            return _error(400, f"List {lid} does not exist", "BadParams")
        return lid

    def subscribe(self, request: Request) -> Response:
        entries = self._refused(request, "subscribers", USER_KEYS)
        if isinstance(entries, Response):
            return entries
        lid = self._list(request)
        if isinstance(lid, Response):
            return lid
        failed: dict[str, list[str]] = {}
        ok = 0
        for e in entries:
            if not self._invalid(e, failed):
                self.lists[lid].add(self._upsert(e))
                ok += 1
        return self._answer(ok, failed)

    def unsubscribe(self, request: Request) -> Response:
        entries = self._refused(request, "subscribers", UNSUBSCRIBER_KEYS)
        if isinstance(entries, Response):
            return entries
        lid = self._list(request)
        if isinstance(lid, Response):
            return lid
        failed: dict[str, list[str]] = {}
        ok = 0
        for e in entries:
            who = self._who(e)
            if who not in self.users:
                kind = "notFoundEmails" if e.get("email") else "notFoundUserIds"
                failed.setdefault(kind, []).append(e.get("email") or e["userId"])
                continue
            self.lists[lid].discard(who)
            ok += 1
        return self._answer(ok, failed)

    def lists_(self, request: Request) -> Response:
        if request.headers.get("Api-Key") != self.api_key:
            return _error(401, "Invalid API key", "BadApiKey")
        return _json(
            200,
            {
                "lists": [
                    {"id": i, "name": f"List {i}", "listType": "Standard", "createdAt": 0}
                    for i in sorted(self.lists)
                ]
            },
        )
