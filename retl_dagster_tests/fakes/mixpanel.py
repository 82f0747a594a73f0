"""A fake Mixpanel ingestion API (docs.mixpanel.com/reference): `/engage` with the project token
in each update (`$set`, `$unset`, `$delete`; `verbose=1` answers `{"status": 1|0, "error"}`;
a bad update fails the request) and `/import?strict=1` with service-account basic auth, gzip
bodies, at most 2000 events, per-event `failed_records` in a 400 that is a partial success,
`$insert_id` deduplication; 429 past the rate limit. Every request is checked by the contract
validator (`retl_dagster_tests.contracts.mixpanel`) and refused the way Mixpanel refuses it."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import mixpanel as contract
from retl_dagster_tests.fakes.base import FakeServer


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeMixpanel(FakeServer):
    url_map = Map(
        [
            Rule("/engage", endpoint="engage", methods=["POST"]),
            Rule("/import", endpoint="import_", methods=["POST"]),
            Rule("/api/app/me", endpoint="me", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        token: str,
        user: str,
        secret: str,
        rate_limit: int | None = None,
        window_s: float = 1.0,
        project_id: str | None = None,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.token, self.user, self.secret = token, user, secret
        self.project_id = project_id
        """When set, /import requires it in the query (service-account auth)."""
        self.profiles: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []
        """Every profile update applied, as received."""
        self.received: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        """(path, lower-cased headers, query, raw body) of every request, for contract tests."""

    def rate_limited(self, request: Request) -> Response:
        return _json(429, {"code": 429, "error": "too many requests", "status": "error"})

    def _capture(self, request: Request) -> tuple[dict[str, str], dict[str, str], bytes]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.args.items())
        body = request.get_data()
        self.received.append((request.path, headers, query, body))
        return headers, query, body

    def me(self, request: Request) -> Response:
        """`GET /api/app/me` (application API, service-account basic auth): who the account is
        and the projects it may use."""
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != (self.user, self.secret):
            return _json(401, {"error": "Invalid credentials", "status": "error"})
        pid = self.project_id or "1"
        return _json(200, {"status": "ok", "results": {"projects": {pid: {"name": "fake"}}}})

    def engage(self, request: Request) -> Response:
        headers, _, body = self._capture(request)
        try:
            updates = contract.engage_updates(headers, body, token=self.token)
        except contract.Refused as refused:
            return _json(refused.status, refused.body)
        for u in updates:
            pid = str(u["$distinct_id"])
            if "$delete" in u:
                self.profiles.pop(pid, None)
            elif "$unset" in u:
                for k in u["$unset"]:
                    self.profiles.get(pid, {}).pop(k, None)
            else:
                self.profiles.setdefault(pid, {}).update(u["$set"])
            self.updates.append(u)
        return _json(200, {"status": 1, "error": None})

    def import_(self, request: Request) -> Response:
        headers, query, body = self._capture(request)
        try:
            events = contract.import_events(
                headers, query, body, user=self.user, secret=self.secret, project_id=self.project_id
            )
        except contract.Refused as refused:
            return _json(refused.status, refused.body)
        failed = contract.failed_records(events)
        refused_at = {f["index"] for f in failed}
        imported = 0
        for i, e in enumerate(events):
            if i not in refused_at:
                self.events[e["properties"]["$insert_id"]] = e  # dedup on $insert_id
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
