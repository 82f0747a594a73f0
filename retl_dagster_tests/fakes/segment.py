"""A fake Segment HTTP Tracking API (segment.com/docs/connections/sources/catalog/libraries/
server/http-api): `POST /v1/batch`, write key as the basic-auth user; 400 when a batch is over
500 KB or a call over 32 KB; 200 `{"success": true}`; 429 past the rate limit; calls with a
messageId already seen are dropped (Segment deduplicates on messageId). Every request is checked
by the contract validator (`retl_dagster_tests.contracts.segment`) and refused as Segment
refuses it: 400 for a body over 500 KB, a call over 32 KB or a timestamp that is not ISO 8601."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import segment as contract
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
        self.received: list[tuple[dict[str, str], bytes]] = []
        """(lower-cased headers, raw body) of every request, for contract tests."""

    def rate_limited(self, request: Request) -> Response:
        return _json(429, {"success": False, "message": "Too Many Requests"})

    def batch(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw = request.get_data()
        self.received.append((headers, raw))
        try:
            calls = contract.batch_calls(headers, raw, write_key=self.write_key)
        except contract.Refused as refused:
            return _json(refused.status, refused.body)
        for call in calls:
            if call["messageId"] in self.calls:
                self.duplicates += 1
            self.calls[call["messageId"]] = call
        return _json(200, {"success": True})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls.values() if c["type"] == kind]
