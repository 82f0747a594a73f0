"""What Segment's HTTP Tracking API refuses on `POST /v1/batch`, as its reference states it
(segment.com/docs/connections/sources/catalog/libraries/server/http-api, and the common fields of
segment.com/docs/connections/spec): the write key as the basic-auth user (empty password) or as
`writeKey` in the body; `Content-Type: application/json`; at most 500 KB a request and 32 KB a
call, else 400 Bad Request; every call with a `userId` or `anonymousId`; a `track` with its
`event` name; `timestamp` (and `sentAt`), where present, an ISO 8601 date string.

The fake runs `batch_calls` on every request it receives; the contract tests run it on what the
official SDK (`segment-analytics-python`) sends too."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

MAX_BATCH_BYTES = 500_000
"""500 KB, read as the smaller (decimal) kilobyte: the fake is never laxer than Segment."""
MAX_CALL_BYTES = 32 * 1024
CALL_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})


class Refused(Exception):
    """The API answers `status` with `body` (Segment refuses a batch whole)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _bad(message: str, status: int = 400) -> Refused:
    return Refused(status, {"success": False, "message": message})


def is_iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def write_key_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The write key a request authenticates with (basic-auth user, or `writeKey` in the body)."""
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    if auth.startswith("Basic "):
        try:
            user, _, _ = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        return user
    key = body.get("writeKey")
    return key if isinstance(key, str) else None


def call_problem(call: Any) -> str | None:
    """Why Segment refuses this call, or None."""
    if not isinstance(call, dict):
        return "each call must be a JSON object"
    if len(json.dumps(call).encode()) > MAX_CALL_BYTES:
        return "message exceeds the 32KB limit"
    if call.get("type") not in CALL_TYPES:
        return f"invalid type {call.get('type')!r}"
    if not call.get("userId") and not call.get("anonymousId"):
        return "userId or anonymousId is required"
    if call["type"] == "track" and not (isinstance(call.get("event"), str) and call["event"]):
        return "track calls need an event name"
    if "timestamp" in call and not is_iso8601(call["timestamp"]):
        return f"timestamp {call['timestamp']!r} is not an ISO 8601 date string"
    for key in ("properties", "traits", "context"):
        if key in call and not isinstance(call[key], dict):
            return f"{key} must be an object"
    return None


def batch_calls(headers: Mapping[str, str], body: bytes, *, write_key: str) -> list[dict[str, Any]]:
    """The calls of a /v1/batch request; raises Refused as Segment answers a refused batch."""
    h = {k.lower(): v for k, v in headers.items()}
    if h.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _bad("content-type must be application/json")
    if len(body) > MAX_BATCH_BYTES:
        raise _bad("batch exceeds the 500KB limit")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise _bad("invalid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("batch"), list):
        raise _bad('body must be {"batch": [calls]}')
    if write_key_of(headers, parsed) != write_key:
        raise _bad("Invalid write key", status=401)
    if "sentAt" in parsed and not is_iso8601(parsed["sentAt"]):
        raise _bad("sentAt is not an ISO 8601 date string")
    for call in parsed["batch"]:
        problem = call_problem(call)
        if problem is not None:
            raise _bad(problem)
    return list(parsed["batch"])
