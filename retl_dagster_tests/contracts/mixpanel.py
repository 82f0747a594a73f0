"""What Mixpanel's ingestion API refuses, as its reference states it (docs.mixpanel.com: Import
Events, User Profiles, the 400 Bad Request troubleshooting page). The fake runs these on every
request it receives; the contract tests run them on what the official `mixpanel` SDK sends too.

`/import?strict=1`: a JSON array (or ndjson) of at most 2000 `{"event", "properties"}` objects,
10 MB uncompressed, optionally gzip; service-account basic auth with `project_id` in the query.
Each event needs `time` as a Unix number (seconds or milliseconds) from 1971-01-01 to one hour
ahead, a non-placeholder `distinct_id` and an `$insert_id` (at most 36 alphanumerics or `-`);
one that does not is listed in `failed_records` and the others are imported.

`/engage`: a JSON array (or form field `data`) of at most 2000 updates, each with `$token`,
`$distinct_id` and exactly one operation."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

MAX_EVENTS = 2000
MAX_UPDATES = 2000
MAX_IMPORT_BYTES = 10 * 1024 * 1024
PLACEHOLDER_IDS = frozenset(
    {
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "undefined",
        "00000000-0000-0000-0000-000000000000",
    }
)
EARLIEST_S = dt.datetime(1971, 1, 1, tzinfo=dt.UTC).timestamp()
MILLIS_ABOVE = 1e11
"""A `time` above this is milliseconds (Mixpanel takes either)."""
INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
EVENT_KEYS = frozenset({"event", "properties"})
OPERATIONS = frozenset(
    {"$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete"}
)
UPDATE_KEYS = OPERATIONS | {
    "$token",
    "$distinct_id",
    "$ip",
    "$time",
    "$ignore_time",
    "$ignore_alias",
}


class Refused(Exception):
    """The request as a whole is refused: the API answers `status` with `body`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _bad(status: int, error: str) -> Refused:
    return Refused(status, {"code": status, "error": error, "status": "Bad Request"})


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def basic_auth(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def import_events(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
    *,
    user: str,
    secret: str,
    project_id: str | None = None,
) -> list[Any]:
    """The events of an /import request; raises Refused where the whole request is refused."""
    h = _lower(headers)
    if h.get("authorization") != basic_auth(user, secret):
        raise Refused(401, {"code": 401, "error": "Invalid credentials", "status": "error"})
    if project_id is not None and query.get("project_id") != project_id:
        raise _bad(400, "project_id is required with a service account")
    raw = gzip.decompress(body) if h.get("content-encoding", "").lower() == "gzip" else body
    if len(raw) > MAX_IMPORT_BYTES:
        raise Refused(413, {"code": 413, "error": "request too large", "status": "error"})
    kind = h.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            events = json.loads(raw)
        elif kind == "application/x-ndjson":
            events = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            raise _bad(400, "Content-Type must be application/json or application/x-ndjson")
    except ValueError:
        raise _bad(400, "body is not valid JSON") from None
    if not isinstance(events, list):
        raise _bad(400, "body must be a JSON array of events")
    if len(events) > MAX_EVENTS:
        raise _bad(400, f"max {MAX_EVENTS} events per request")
    for e in events:
        if (
            not isinstance(e, dict)
            or set(e) - EVENT_KEYS
            or not isinstance(e.get("properties"), dict)
        ):
            raise _bad(400, 'each event is {"event": name, "properties": {...}}')
        if not isinstance(e.get("event"), str) or not e["event"]:
            raise _bad(400, "'event' must be a non-empty string")
    return events


def event_failure(event: dict[str, Any], now: float | None = None) -> tuple[str, str] | None:
    """(field, message) of an event strict=1 refuses, as Mixpanel words it; None if valid."""
    p = event["properties"]
    t = p.get("time")
    horizon = (time.time() if now is None else now) + 3600
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return (
            "properties.time",
            "'properties.time' is invalid: must be specified as seconds since epoch",
        )
    seconds = t / 1000 if t > MILLIS_ABOVE else t
    if not EARLIEST_S <= seconds <= horizon:
        return (
            "properties.time",
            "'properties.time' is invalid: before 1971-01-01 or over 1 hour in the future",
        )
    distinct = p.get("distinct_id")
    if not isinstance(distinct, str) or distinct.lower() in PLACEHOLDER_IDS:
        return (
            "properties.distinct_id",
            "'properties.distinct_id' is invalid: a placeholder value",
        )
    iid = p.get("$insert_id")
    if not isinstance(iid, str) or not INSERT_ID.match(iid):
        return (
            "properties.$insert_id",
            "'properties.$insert_id' is required: at most 36 alphanumeric characters or '-'",
        )
    return None


def failed_records(events: list[Any], now: float | None = None) -> list[dict[str, Any]]:
    """The `failed_records` of an /import?strict=1 answer (empty: every event valid)."""
    out = []
    for i, e in enumerate(events):
        problem = event_failure(e, now)
        if problem is not None:
            out.append(
                {
                    "index": i,
                    "insert_id": e["properties"].get("$insert_id"),
                    "field": problem[0],
                    "message": problem[1],
                }
            )
    return out


def engage_updates(headers: Mapping[str, str], body: bytes, *, token: str) -> list[dict[str, Any]]:
    """The updates of an /engage request; raises Refused (verbose answer) where it is refused."""
    h = _lower(headers)
    kind = h.get("content-type", "").split(";")[0].strip().lower()
    raw = body.decode()
    if kind == "application/x-www-form-urlencoded":
        raw = dict(parse_qsl(raw)).get("data", "")
    try:
        updates = json.loads(raw)
    except ValueError:
        raise Refused(400, {"status": 0, "error": "data is not valid JSON"}) from None
    if isinstance(updates, dict):
        updates = [updates]
    if not isinstance(updates, list) or len(updates) > MAX_UPDATES:
        raise Refused(400, {"status": 0, "error": f"at most {MAX_UPDATES} updates per request"})
    for u in updates:
        problem = update_problem(u, token)
        if problem is not None:
            raise Refused(400, {"status": 0, "error": problem})
    return updates


def update_problem(u: Any, token: str) -> str | None:
    if not isinstance(u, dict):
        return "each update must be a JSON object"
    if u.get("$token") != token:
        return "Invalid project token"
    unknown = set(u) - UPDATE_KEYS
    if unknown:
        return f"unknown keys in a profile update: {sorted(unknown)}"
    ops = [k for k in u if k in OPERATIONS]
    if len(ops) != 1:
        return "exactly one operation per update"
    if str(u.get("$distinct_id", "")).lower() in PLACEHOLDER_IDS | {""}:
        return f"$distinct_id is invalid: {u.get('$distinct_id')!r}"
    if "$set" in u and not isinstance(u["$set"], dict):
        return "$set takes an object"
    if "$unset" in u and not isinstance(u["$unset"], list):
        return "$unset takes a list of property names"
    if "$ignore_time" in u and not isinstance(u["$ignore_time"], bool):
        return "$ignore_time must be true or false"
    return None
