"""A fake Customer.io Track API (docs.customer.io, Track API v1/v2), real HTTP over loopback,
refusing what Customer.io refuses:

- every request needs HTTP basic auth with the site id and Track API key (else 401);
- `POST /api/v2/batch`: the body under 500 KB (else 413), checked against the contract
  (contracts/customerio.py; a 400 without indexes when it does not fit, kept in
  `contract_errors`); each operation under 32 KB and with a valid email where it carries one,
  else listed in `errors[]` (`batch_index`, `reason`, `field`, `message`) and left out while the
  others apply (answer 207; 200 `{}` when every operation applied);
- identify is an upsert of the person's attributes (found by id, email or cio_id), delete removes
  the person, an event is stored unless one with the same `id` was (Customer.io dedupes by it);
- `GET /api/v1/accounts/region`: the workspace's region;
- past `rate_limit` requests in `window_s`: 429 (no `Retry-After`: the client backs off alone).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.customerio import ContractError, check_request
from retl_dagster_tests.fakes.base import FakeServer

MAX_BODY = 500 * 1024
MAX_OPERATION = 32 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeCustomerIO(FakeServer):
    url_map = Map(
        [
            Rule("/api/v2/batch", endpoint="batch", methods=["POST"]),
            Rule("/api/v1/accounts/region", endpoint="region", methods=["GET"]),
        ]
    )

    def __init__(self, site_id: str, api_key: str, data_center: str = "us") -> None:
        super().__init__()
        self.site_id, self.api_key, self.data_center = site_id, api_key, data_center
        self.people: dict[str, dict[str, Any]] = {}
        """cio_id -> {"id"?, "email"?, "attributes": {...}}."""
        self.events: list[dict[str, Any]] = []
        self.dropped_duplicates = 0
        self.contract_errors: list[str] = []
        self._ids = itertools.count(1)

    def rate_limited(self, request: Request) -> Response:
        return _json(429, {"meta": {"error": "rate limit exceeded"}})

    def _authorized(self, request: Request) -> bool:
        want = base64.b64encode(f"{self.site_id}:{self.api_key}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {want}"

    def _unauthorized(self) -> Response:
        return _json(401, {"meta": {"error": "Unauthorized request"}})

    def find(self, kind: str, value: str) -> str | None:
        if kind == "cio_id":
            return value if value in self.people else None
        return next((c for c, p in self.people.items() if p.get(kind) == value), None)

    def person(self, kind: str, value: str) -> dict[str, Any] | None:
        cio = self.find(kind, value)
        return self.people[cio] if cio else None

    def region(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        host = "track-eu" if self.data_center == "eu" else "track"
        return _json(
            200,
            {
                "url": f"https://{host}.customer.io",
                "data_center": self.data_center,
                "environment_id": 1,
            },
        )

    def batch(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        if len(request.get_data()) > MAX_BODY:
            return _json(413, {"meta": {"error": "request body must be smaller than 500kb"}})
        body = request.get_json(silent=True)
        try:
            check_request(body)
        except ContractError as exc:
            self.contract_errors.append(str(exc))
            return _json(
                400, {"errors": [{"reason": "invalid", "message": p} for p in exc.problems]}
            )
        errors: list[dict[str, Any]] = []
        for i, op in enumerate(body["batch"]):
            problem = self._problem(op)
            if problem is not None:
                errors.append({"batch_index": i, "reason": "invalid", **problem})
            else:
                self._apply(op)
        return _json(207, {"errors": errors}) if errors else _json(200, {})

    def _problem(self, op: dict[str, Any]) -> dict[str, str] | None:
        if len(json.dumps(op, separators=(",", ":")).encode()) > MAX_OPERATION:
            return {"field": "", "message": "operation must be smaller than 32kb"}
        for field, value in (
            ("identifiers.email", op["identifiers"].get("email")),
            ("attributes.email", (op.get("attributes") or {}).get("email")),
        ):
            if value is not None and not (isinstance(value, str) and _EMAIL.match(value)):
                return {"field": field, "message": f"invalid email address: {value!r}"}
        return None

    def _apply(self, op: dict[str, Any]) -> None:
        [(kind, value)] = op["identifiers"].items()
        cio = self.find(kind, value)
        if op["action"] == "delete":
            if cio is not None:
                del self.people[cio]
            return
        if cio is None:
            if kind == "cio_id":
                return  # Customer.io never creates a person from a cio_id it did not assign
            cio = f"cio{next(self._ids):08d}"
            self.people[cio] = {kind: value, "attributes": {}}
        person = self.people[cio]
        if op["action"] == "identify":
            attributes = dict(op.get("attributes") or {})
            if "email" in attributes:
                person["email"] = attributes["email"]
            person["attributes"].update(attributes)
        elif op["action"] == "event":
            if any(e["id"] == op.get("id") for e in self.events if op.get("id")):
                self.dropped_duplicates += 1
                return
            self.events.append(
                {
                    "cio_id": cio,
                    "name": op["name"],
                    "id": op.get("id"),
                    "timestamp": op.get("timestamp"),
                    "attributes": op.get("attributes") or {},
                }
            )
