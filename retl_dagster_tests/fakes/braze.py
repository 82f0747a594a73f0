"""A fake Braze REST API (braze.com/docs/api): `/users/track` with at most 75 objects across
attributes, events and purchases (else 400), Bearer REST key (else 401 "Invalid API key"),
per-object minor errors `{"type", "input_array", "index"}` in a 201 `"success"` answer (the
other objects are processed), `/users/delete` (at most 50 external_ids), and 429 with
`X-RateLimit-Limit/Remaining/Reset` past the rate limit.

Event and purchase objects are checked against Braze's own object references (braze.com/docs/api/
objects_filters/event_object and purchase_object); no Braze SDK for Python exists to compare with,
so these rules are the contract: only documented top-level keys; `time` required, a string in ISO
8601 (or Braze's `yyyy-MM-dd'T'HH:mm:ss:SSSZ`); an event's `name` a string; a purchase's
`product_id` a string, `currency` an ISO 4217 alphabetic code (three letters), `price` a number,
`quantity` (optional) an integer of at most 100 (Braze counts quantity X as X purchases, so at
least 1); `properties` (optional) an object without the keys Braze reserves (`time`,
`event_name`: its custom-event tracking guide)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_IDENTIFIERS = {"external_id", "user_alias", "braze_id", "email", "phone"}
EVENT_KEYS = _IDENTIFIERS | {"app_id", "name", "time", "properties", "_update_existing_only"}
PURCHASE_KEYS = _IDENTIFIERS | {
    "app_id",
    "product_id",
    "currency",
    "price",
    "quantity",
    "time",
    "properties",
    "_update_existing_only",
}
_BRAZE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}:\d{3}[+-]\d{4}$")
"""Braze's other documented time format, `yyyy-MM-dd'T'HH:mm:ss:SSSZ`."""
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
RESERVED_PROPERTIES = ("time", "event_name")


def is_braze_time(value: Any) -> bool:
    """A `time` Braze's event and purchase objects accept: ISO 8601 text or its own format."""
    if not isinstance(value, str):
        return False
    if _BRAZE_TIME.match(value):
        return True
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def event_problem(array: str, obj: dict[str, Any]) -> str | None:
    """Why Braze refuses this event or purchase object (its reference's rules), or None."""
    allowed = EVENT_KEYS if array == "events" else PURCHASE_KEYS
    unknown = sorted(set(obj) - allowed)
    if unknown:
        return f"unknown fields in a {array[:-1]} object: {', '.join(unknown)}"
    if "time" not in obj:
        return "'time' is required"
    if not is_braze_time(obj["time"]):
        return f"'time' must be a datetime as string in ISO 8601, not {obj['time']!r}"
    if "properties" in obj and not isinstance(obj["properties"], dict):
        return "'properties' must be an object"
    reserved = [k for k in RESERVED_PROPERTIES if k in obj.get("properties", {})]
    if reserved:
        return f"reserved keys cannot be event properties: {', '.join(reserved)}"
    if array == "events":
        if not isinstance(obj.get("name"), str) or not obj["name"]:
            return "'name' is required and must be a string"
        return None
    if not isinstance(obj.get("product_id"), str) or not obj["product_id"]:
        return "'product_id' is required and must be a string"
    if not isinstance(obj.get("currency"), str) or not _CURRENCY.match(obj["currency"]):
        return "'currency' must be an ISO 4217 alphabetic currency code"
    if not _number(obj.get("price")):
        return "'price' must be a number"
    if "quantity" in obj:
        q = obj["quantity"]
        if not isinstance(q, int) or isinstance(q, bool) or not 1 <= q <= 100:
            return "'quantity' must be an integer from 1 to 100"
    return None


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
                elif array != "attributes" and (why := event_problem(array, obj)) is not None:
                    problem = why
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
