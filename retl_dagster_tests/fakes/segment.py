"""A fake Segment HTTP Tracking API (segment.com/docs/connections/sources/catalog/libraries/
server/http-api): `POST /v1/batch`, write key as the basic-auth user; 400 when a batch is over
500 KB or a call over 32 KB; 200 `{"success": true}`; 429 past the rate limit; calls with a
messageId already seen are dropped (Segment deduplicates on messageId)."""

from __future__ import annotations

import base64
import json
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeSegment(FakeServer):
    url_map = Map([Rule("/v1/batch", endpoint="batch", methods=["POST"])])

    def __init__(self, write_key: str, rate_limit: int | None = None, window_s: float = 1.0):
        super().__init__(rate_limit, window_s)
        self.write_key = write_key
        self.calls: dict[str, dict[str, Any]] = {}
        self.duplicates = 0

    def rate_limited(self, request: Request) -> Response:
        return _json(429, {"success": False, "message": "Too Many Requests"})

    def batch(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        if auth != expected:
            return _json(401, {"success": False, "message": "Invalid write key"})
        raw = request.get_data()
        if len(raw) > 500 * 1024:
            return _json(400, {"success": False, "message": "batch exceeds 500KB"})
        calls = json.loads(raw)["batch"]
        for call in calls:
            if len(json.dumps(call).encode()) > 32 * 1024:
                return _json(400, {"success": False, "message": "message exceeds 32KB"})
            if call.get("type") not in ("identify", "track"):
                return _json(400, {"success": False, "message": "invalid type"})
        for call in calls:
            if call["messageId"] in self.calls:
                self.duplicates += 1
            self.calls[call["messageId"]] = call
        return _json(200, {"success": True})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls.values() if c["type"] == kind]
