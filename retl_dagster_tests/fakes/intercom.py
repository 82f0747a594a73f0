"""A fake Intercom REST API (developers.intercom.com, API version 2.11: Contacts, Companies,
Admins `/me`, Errors and Rate limiting), real HTTP over loopback. Every body it receives is held
to the official SDK's request models (contracts/intercom.py); it refuses what Intercom refuses:

- `Authorization: Bearer <token>` missing or wrong: 401 `unauthorized` (`Access Token Invalid`);
- `POST /contacts`: an invalid email 400 `parameter_invalid`; an `external_id` (or, without one,
  an email) another contact has: 409 `conflict` (`A contact matching those details already
  exists with id=...`);
- `PUT /contacts/{id}`, `DELETE /contacts/{id}` of an unknown id: 404 `not_found`;
- `POST /contacts/search` (a single `=` filter on `external_id` or `email`);
- `POST /companies` creates or updates by `company_id` (required);
- a body the SDK's models refuse: 400 `parameter_invalid`, and the problem kept in
  `contract_errors`;
- past `rate_limit` requests in `window_s`: 429 `rate_limit_exceeded` with `X-RateLimit-Reset`
  (epoch seconds at which the window resets).

Errors are Intercom's `{"type": "error.list", "request_id", "errors": [{"code", "message"}]}`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.intercom import request_problems
from retl_dagster_tests.fakes.base import FakeServer

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers or {}
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "type": "error.list",
        "request_id": f"req{time.monotonic_ns() % 10**9:09d}",
        "errors": [{"code": code, "message": message}],
    }
    return _json(status, body, headers)


class FakeIntercom(FakeServer):
    url_map = Map(
        [
            Rule("/me", endpoint="me", methods=["GET"]),
            Rule("/contacts", endpoint="create_contact", methods=["POST"]),
            Rule("/contacts/search", endpoint="search", methods=["POST"]),
            Rule("/contacts/<contact_id>", endpoint="update_contact", methods=["PUT"]),
            Rule("/contacts/<contact_id>", endpoint="delete_contact", methods=["DELETE"]),
            Rule("/companies", endpoint="upsert_company", methods=["POST"]),
        ]
    )

    def __init__(self, token: str, rate_limit: int | None = None, window_s: float = 1.0) -> None:
        super().__init__(rate_limit, window_s)
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}
        self.companies: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.contract_errors: list[str] = []
        self.versions: set[str | None] = set()
        """The `Intercom-Version` headers received."""
        self._ids = itertools.count(1)

    def rate_limited(self, request: Request) -> Response:
        reset = math.ceil(time.time() + self.window_s)
        return _error(
            429,
            "rate_limit_exceeded",
            "Exceeded rate limit",
            headers={
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
        )

    def _new_id(self) -> str:
        return f"6657a1b2c3d4e5f6{next(self._ids):08x}"

    def _guard(self, request: Request) -> tuple[Response | None, Any]:
        """(a refusal, or None; the JSON body) for auth and the SDK contract."""
        self.versions.add(request.headers.get("Intercom-Version"))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "Access Token Invalid"), None
        body = request.get_json(silent=True) if request.data else None
        problems = request_problems(request.method, request.path, body)
        if problems:
            self.contract_errors.extend(problems)
            return _error(400, "parameter_invalid", "; ".join(problems)), body
        return None, body

    def find(self, field: str, value: Any) -> dict[str, Any] | None:
        wanted = str(value).lower() if field == "email" else value
        for contact in self.contacts.values():
            have = contact.get(field)
            if have is not None and (str(have).lower() if field == "email" else have) == wanted:
                return contact
        return None

    def _apply(self, stored: dict[str, Any], body: dict[str, Any]) -> None:
        for key, value in body.items():
            if key == "custom_attributes":
                stored.setdefault("custom_attributes", {}).update(value or {})
            else:
                stored[key] = value

    # -- endpoints --------------------------------------------------------------------------------
    def me(self, request: Request) -> Response:
        refused, _ = self._guard(request)
        if refused:
            return refused
        return _json(
            200,
            {
                "type": "admin",
                "id": "991",
                "email": "ops@example.com",
                "name": "Ops",
                "app": {"type": "app", "id_code": "abc123", "name": "Acme", "region": "US"},
            },
        )

    def search(self, request: Request) -> Response:
        refused, body = self._guard(request)
        if refused:
            return refused
        query = body["query"]
        found = self.find(query["field"], query["value"]) if query["operator"] == "=" else None
        data = [found] if found else []
        return _json(200, {"type": "list", "data": data, "total_count": len(data)})

    def create_contact(self, request: Request) -> Response:
        refused, body = self._guard(request)
        if refused:
            return refused
        email = body.get("email")
        if email is not None and not _EMAIL.match(str(email)):
            return _error(400, "parameter_invalid", f"Invalid email address: {email}")
        for field in ("external_id", "email"):
            if body.get(field) is not None:
                existing = self.find(field, body[field])
                if existing is not None:
                    return _error(
                        409,
                        "conflict",
                        f"A contact matching those details already exists with id={existing['id']}",
                    )
                break  # Intercom matches on external_id when given, else email
        contact: dict[str, Any] = {"type": "contact", "id": self._new_id()}
        self._apply(contact, body)
        self.contacts[contact["id"]] = contact
        return _json(200, contact)

    def update_contact(self, request: Request, contact_id: str) -> Response:
        refused, body = self._guard(request)
        if refused:
            return refused
        contact = self.contacts.get(contact_id)
        if contact is None:
            return _error(404, "not_found", "User Not Found")
        email = body.get("email")
        if email is not None and not _EMAIL.match(str(email)):
            return _error(400, "parameter_invalid", f"Invalid email address: {email}")
        self._apply(contact, body)
        return _json(200, contact)

    def delete_contact(self, request: Request, contact_id: str) -> Response:
        refused, _ = self._guard(request)
        if refused:
            return refused
        contact = self.contacts.pop(contact_id, None)
        if contact is None:
            return _error(404, "not_found", "User Not Found")
        self.deleted.add(contact_id)
        return _json(
            200,
            {"id": contact_id, "external_id": contact.get("external_id"), "type": "contact",
             "deleted": True},
        )  # fmt: skip

    def upsert_company(self, request: Request) -> Response:
        refused, body = self._guard(request)
        if refused:
            return refused
        company_id = body.get("company_id")
        if not company_id:
            return _error(400, "parameter_not_found", "company_id not specified")
        stored = self.companies.get(company_id)
        if stored is None:
            stored = {"type": "company", "id": self._new_id()}
            self.companies[company_id] = stored
        self._apply(stored, body)
        return _json(200, stored)
