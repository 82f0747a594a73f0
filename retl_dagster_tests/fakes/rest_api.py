"""A small REST API of contacts, on loopback, for the `http` destination: what a typical vendor's
API does, with the shapes the destination must read.

- `POST /contacts` (JSON `{"email", ...}`) -> 201 `{"data": {"id": "c-1", ...}}`; an email
  without `@` -> 422 `{"message": "invalid email ..."}`.
- `PATCH /contacts/<id>` -> 200, `DELETE /contacts/<id>` -> 204; an unknown id -> 404.
- `POST /contacts/batch` (`{"contacts": [{"ref", "email", ...}]}`) -> 200 with per-record errors
  `{"errors": [{"ref": ..., "message": ...}]}`; the other contacts are stored (by `ref`).
- `GET /me` -> 200 when authorised (for `retl check`); `OPTIONS` anything -> 204.
- Auth, as configured: bearer token, HTTP basic, an API key header, or OAuth2 client
  credentials (`POST /oauth/token`, form `grant_type=client_credentials`, the client by HTTP
  Basic); anything else -> 401 `{"message": "unauthorized"}`. `revoke()` expires issued tokens.
- `throttle = n`: the next n requests get 429 with `Retry-After: 1`.
- A body that is not JSON, or not `application/json` -> 400 / 415.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from dataclasses import dataclass
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


class FakeRestApi(FakeServer):
    url_map = Map(
        [
            Rule("/oauth/token", methods=["POST"], endpoint="token"),
            Rule("/me", methods=["GET"], endpoint="me"),
            Rule("/contacts", methods=["POST"], endpoint="create"),
            Rule("/contacts/batch", methods=["POST"], endpoint="batch"),
            Rule("/contacts/<cid>", methods=["PATCH"], endpoint="update"),
            Rule("/contacts/<cid>", methods=["DELETE"], endpoint="delete"),
        ]
    )

    def __init__(self, auth: tuple[str, ...] = ("none",)) -> None:
        super().__init__()
        self.auth = auth
        """("bearer", token) | ("basic", user, password) | ("api_key", header, value) |
        ("oauth", client_id, client_secret) | ("none",)."""
        self.contacts: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.throttle = 0
        self.throttled = 0
        self.sent: list[Sent] = []
        self._ids = itertools.count(1)

    def revoke(self) -> None:
        with self.lock:
            self.tokens.clear()

    # -- plumbing ---------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        raw = request.get_data()
        # The endpoints read the body again from a fresh request.
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
        with self.lock:
            self.sent.append(Sent(request.method, request.path, dict(request.headers), raw))
            if request.method == "OPTIONS":
                return Response(status=204)(environ, start_response)
            if self.throttle:
                self.throttle -= 1
                self.throttled += 1
                response = _json(429, {"message": "slow down"}, {"Retry-After": "1"})
                return response(environ, start_response)
        return super()._wsgi(environ, start_response)

    def _authorised(self, request: Request) -> bool:
        kind, *args = self.auth
        header = request.headers.get("Authorization", "")
        if kind == "bearer":
            return header == f"Bearer {args[0]}"
        if kind == "basic":
            pair = base64.b64encode(f"{args[0]}:{args[1]}".encode()).decode()
            return header == f"Basic {pair}"
        if kind == "api_key":
            return request.headers.get(args[0]) == args[1]
        if kind == "oauth":
            return header.removeprefix("Bearer ") in self.tokens
        return True

    def _body(self, request: Request) -> tuple[Any, Response | None]:
        if request.mimetype != "application/json":
            return None, _json(415, {"message": "expected application/json"})
        try:
            return json.loads(request.get_data()), None
        except ValueError:
            return None, _json(400, {"message": "malformed JSON"})

    @staticmethod
    def _email_problem(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            return "email is required"
        if "@" not in body["email"]:
            return f"invalid email '{body['email']}'"
        return None

    # -- endpoints --------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        if self.auth[0] != "oauth" or request.form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type"})
        pair = base64.b64encode(f"{self.auth[1]}:{self.auth[2]}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {pair}":
            return _json(401, {"error": "invalid_client"})
        self.tokens_issued += 1
        token = f"tok-{self.tokens_issued}"
        self.tokens.add(token)
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def me(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(401, {"message": "unauthorized"})
        return _json(200, {"ok": True})

    def create(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(401, {"message": "unauthorized"})
        body, error = self._body(request)
        if error is not None:
            return error
        problem = self._email_problem(body)
        if problem:
            return _json(422, {"message": problem})
        cid = f"c-{next(self._ids)}"
        self.contacts[cid] = body
        return _json(201, {"data": {"id": cid, **body}})

    def update(self, request: Request, cid: str) -> Response:
        if not self._authorised(request):
            return _json(401, {"message": "unauthorized"})
        body, error = self._body(request)
        if error is not None:
            return error
        if cid not in self.contacts:
            return _json(404, {"message": f"no contact {cid}"})
        self.contacts[cid] = {**self.contacts[cid], **body}
        return _json(200, {"data": {"id": cid, **self.contacts[cid]}})

    def delete(self, request: Request, cid: str) -> Response:
        if not self._authorised(request):
            return _json(401, {"message": "unauthorized"})
        if self.contacts.pop(cid, None) is None:
            return _json(404, {"message": f"no contact {cid}"})
        return Response(status=204)

    def batch(self, request: Request) -> Response:
        if not self._authorised(request):
            return _json(401, {"message": "unauthorized"})
        body, error = self._body(request)
        if error is not None:
            return error
        items = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return _json(400, {"message": "contacts must be a list"})
        errors = []
        for item in items:
            problem = self._email_problem(item)
            if problem:
                errors.append({"ref": item.get("ref"), "message": problem})
            else:
                self.contacts[str(item.get("ref"))] = item
        return _json(200, {"errors": errors})
