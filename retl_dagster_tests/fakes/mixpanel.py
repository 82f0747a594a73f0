"""A fake Mixpanel ingestion API (docs.mixpanel.com/reference): `/engage` with the project token
in each update (`$set`, `$unset`, `$delete`; `verbose=1` answers `{"status": 1|0, "error"}`;
a bad update fails the request) and `/import?strict=1` with service-account basic auth, gzip
bodies, at most 2000 events, per-event `failed_records` in a 400 that is a partial success,
`$insert_id` deduplication; 429 past the rate limit."""

from __future__ import annotations

import base64
import gzip
import json
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

PLACEHOLDER_IDS = {"anon", "anonymous", "nil", "none", "null", "n/a", "undefined"}


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeMixpanel(FakeServer):
    url_map = Map(
        [
            Rule("/engage", endpoint="engage", methods=["POST"]),
            Rule("/import", endpoint="import_", methods=["POST"]),
        ]
    )

    def __init__(
        self,
        token: str,
        user: str,
        secret: str,
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.token, self.user, self.secret = token, user, secret
        self.profiles: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}

    def rate_limited(self, request: Request) -> Response:
        return _json(429, {"code": 429, "error": "too many requests", "status": "error"})

    def engage(self, request: Request) -> Response:
        updates = json.loads(request.get_data())
        if len(updates) > 2000:
            return _json(400, {"status": 0, "error": "batch exceeds 2000 updates"})
        for u in updates:
            if u.get("$token") != self.token:
                return _json(200, {"status": 0, "error": "Invalid project token"})
            ops = [k for k in u if k in ("$set", "$unset", "$delete", "$set_once")]
            if len(ops) != 1:
                return _json(200, {"status": 0, "error": "exactly one operation per update"})
            if str(u.get("$distinct_id", "")).lower() in PLACEHOLDER_IDS | {""}:
                return _json(
                    200,
                    {"status": 0, "error": f"$distinct_id is invalid: {u.get('$distinct_id')!r}"},
                )
        for u in updates:
            pid = str(u["$distinct_id"])
            if "$delete" in u:
                self.profiles.pop(pid, None)
            elif "$unset" in u:
                for k in u["$unset"]:
                    self.profiles.get(pid, {}).pop(k, None)
            else:
                self.profiles.setdefault(pid, {}).update(u["$set"])
        return _json(200, {"status": 1, "error": None})

    def import_(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.secret}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _json(401, {"code": 401, "error": "Invalid credentials", "status": "error"})
        raw = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        if len(raw) > 10 * 1024 * 1024:
            return _json(413, {"code": 413, "error": "request too large", "status": "error"})
        events = json.loads(raw)
        if len(events) > 2000:
            return _json(400, {"code": 400, "error": "max 2000 events", "status": "Bad Request"})
        failed, imported = [], 0
        horizon = time.time() + 3600
        for i, e in enumerate(events):
            p = e.get("properties", {})
            t = p.get("time")
            seconds = t / 1000 if isinstance(t, (int, float)) and t > 1e11 else t
            problem = None
            if not isinstance(seconds, (int, float)) or not 31536000 <= seconds <= horizon:
                problem = (
                    "properties.time",
                    "'properties.time' is invalid: must be specified as seconds since epoch",
                )
            elif str(p.get("distinct_id", "")).lower() in PLACEHOLDER_IDS:
                problem = (
                    "properties.distinct_id",
                    "'properties.distinct_id' is invalid: a placeholder value",
                )
            elif not p.get("$insert_id"):
                problem = ("properties.$insert_id", "'properties.$insert_id' is required")
            if problem:
                failed.append(
                    {
                        "index": i,
                        "insert_id": p.get("$insert_id"),
                        "field": problem[0],
                        "message": problem[1],
                    }
                )
                continue
            self.events[p["$insert_id"]] = e  # dedup on $insert_id
            imported += 1
        if failed:
            return _json(
                400,
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "status": "Bad Request",
                    "num_records_imported": imported,
                    "failed_records": failed,
                },
            )
        return _json(200, {"code": 200, "num_records_imported": imported, "status": "OK"})
