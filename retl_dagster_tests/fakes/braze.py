"""A fake Braze REST API (braze.com/docs/api): `/users/track` with at most 75 objects across
attributes, events and purchases (else 400), Bearer REST key (else 401 "Invalid API key"),
per-object minor errors `{"type", "input_array", "index"}` in a 201 `"success"` answer (the
other objects are processed), `/users/delete` (at most 50 external_ids), and 429 with
`X-RateLimit-Limit/Remaining/Reset` past the rate limit."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers or {}
    )


class FakeBraze(FakeServer):
    url_map = Map(
        [
            Rule("/users/track", endpoint="track", methods=["POST"]),
            Rule("/users/delete", endpoint="delete", methods=["POST"]),
        ]
    )

    def __init__(self, api_key: str, rate_limit: int | None = None, window_s: float = 1.0):
        super().__init__(rate_limit, window_s)
        self.api_key = api_key
        self.users: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.subscriptions: dict[tuple[str, str], str] = {}

    def rate_limited(self, request: Request) -> Response:
        reset = int(time.time() + self.window_s) + 1
        return _json(
            429,
            {"message": "Rate limit exceeded"},
            {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
        )

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(401, {"message": "Invalid API key: check your REST API key"})
        return None

    def track(self, request: Request) -> Response:
        if (bad := self._auth(request)) is not None:
            return bad
        body = request.get_json()
        total = sum(len(body.get(k, [])) for k in ("attributes", "events", "purchases"))
        if total > 75:
            return _json(
                400,
                {
                    "message": "Too many objects: at most 75 attributes, events "
                    "and purchases combined per request"
                },
            )
        errors, processed = [], {"attributes": 0, "events": 0, "purchases": 0}
        for array in ("attributes", "events", "purchases"):
            for i, obj in enumerate(body.get(array, [])):
                ident = obj.get("external_id") or obj.get("email") or obj.get("braze_id")
                problem = None
                if not ident:
                    problem = (
                        "'external_id' or 'braze_id' or 'user_alias' or 'email' or "
                        "'phone' is required"
                    )
                elif (
                    array == "attributes"
                    and "email" in obj
                    and obj["email"] is not None
                    and not _EMAIL.match(str(obj["email"]))
                ):
                    problem = f"Invalid email '{obj['email']}'"
                elif array != "attributes" and not obj.get("time"):
                    problem = "'time' is required"
                elif array == "purchases" and not isinstance(obj.get("price"), (int, float)):
                    problem = "'price' must be a number"
                elif any(
                    g.get("subscription_state") not in ("subscribed", "unsubscribed")
                    for g in obj.get("subscription_groups", [])
                ):
                    problem = "subscription_state must be 'subscribed' or 'unsubscribed'"
                if problem:
                    errors.append({"type": problem, "input_array": array, "index": i})
                    continue
                processed[array] += 1
                if array == "attributes":
                    if obj.get("_update_existing_only") and str(ident) not in self.users:
                        continue
                    attrs = {k: v for k, v in obj.items() if k != "_update_existing_only"}
                    user = self.users.setdefault(str(ident), {})
                    for g in attrs.pop("subscription_groups", []):
                        self.subscriptions[(str(ident), g["subscription_group_id"])] = g[
                            "subscription_state"
                        ]
                    for k, v in attrs.items():
                        if v is None:
                            user.pop(k, None)  # null removes the attribute
                        else:
                            user[k] = v
                else:
                    getattr(self, array).append(obj)
        answer: dict[str, Any] = {"message": "success"}
        answer.update({f"{k}_processed": v for k, v in processed.items() if v})
        if errors:
            answer["errors"] = errors
        return _json(201, answer)

    def delete(self, request: Request) -> Response:
        if (bad := self._auth(request)) is not None:
            return bad
        ids = request.get_json().get("external_ids", [])
        if len(ids) > 50:
            return _json(400, {"message": "at most 50 external_ids per request"})
        deleted = sum(1 for i in ids if self.users.pop(str(i), None) is not None)
        return _json(201, {"deleted": deleted, "message": "success"})
