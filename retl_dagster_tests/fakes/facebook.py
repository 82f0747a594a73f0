"""A fake Meta Conversions API (developers.facebook.com, Conversions API "Using the API",
"Customer Information Parameters", Graph API "Handling Errors"):

- `POST /{version}/{pixel_id}/events` with `data` (JSON list, or a JSON string in a form post)
  and `access_token` in the body or query; a wrong token is Graph error 190 (OAuthException),
  an unknown pixel is code 100 / subcode 33 ("Unsupported post request...");
- at most 1,000 events a request;
- ANY invalid event fails the whole request with a 400 Graph error (code 100 "Invalid
  parameter", `error_user_title` / `error_user_msg`), nothing of it is kept: an event older
  than 7 days (subcode 2804003 "Event Timestamp Too Old"), a missing event_name / event_time /
  action_source, an unknown action_source, a website event without client_user_agent, contact
  information that is not a SHA-256 hex digest (Meta does not accept unhashed contact
  information), or user_data without any customer information parameter. The user-facing
  texts of the last few are paraphrased: Meta documents the rules, not every message;
- too many requests in the rolling window: Graph throttling error code 17 ("User request limit
  reached", `is_transient: true`) in a 400, as the Graph API sends it (`throttle_status=429`
  answers with HTTP 429 instead);
- every request body is checked against Meta's Business SDK (contracts/facebook.py): a key the
  SDK never sends, or one in another shape (a hashed value not in a list), is a 400 code 100
  "Invalid parameter" (text paraphrased), recorded in `contract_failures`;
- success: `{"events_received": n, "messages": [], "fbtrace_id"}`; events with the same
  event_name and event_id as one already received are dropped as duplicates (Meta's
  de-duplication of pixel and server events), counted in `duplicates`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import facebook as contract
from retl_dagster_tests.fakes.base import FakeServer

MAX_EVENTS = 1000
ACTION_SOURCES = {
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
}
HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")
CUSTOMER_KEYS = (*HASHED, "external_id", "client_ip_address", "client_user_agent", "fbc", "fbp")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_AGE_S = 7 * 24 * 3600


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def graph_error(
    status: int,
    message: str,
    code: int,
    *,
    subcode: int | None = None,
    title: str | None = None,
    user_msg: str | None = None,
    transient: bool = False,
    type_: str = "OAuthException",
) -> Response:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    err["is_transient"] = transient
    if title:
        err["error_user_title"] = title
    if user_msg:
        err["error_user_msg"] = user_msg
    err["fbtrace_id"] = "A" + secrets.token_hex(8)
    return _json(status, {"error": err})


class FakeMetaConversions(FakeServer):
    url_map = Map(
        [
            Rule("/<version>/<pixel_id>/events", endpoint="post_events", methods=["POST"]),
            Rule("/<version>/<pixel_id>", endpoint="get_pixel", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        access_token: str,
        pixel_id: str,
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.access_token = access_token
        self.pixel_id = pixel_id
        self.throttle_status = 400
        self.events: list[dict[str, Any]] = []
        self.test_events: list[dict[str, Any]] = []
        self.duplicates = 0
        self.contract_failures: list[list[str]] = []
        """The problems of each request that broke the SDK's contract."""
        self._seen: set[tuple[str, str]] = set()

    def rate_limited(self, request: Request) -> Response:
        return graph_error(
            self.throttle_status,
            "(#17) User request limit reached",
            17,
            subcode=2446079,
            transient=True,
        )

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params = dict(body)
        else:
            params = dict(request.form)
            if isinstance(params.get("data"), str):
                params["data"] = json.loads(params["data"])
        if "access_token" not in params and "access_token" in request.args:
            params["access_token"] = request.args["access_token"]
        return params

    def _invalid(self, event: dict[str, Any], now: float) -> Response | None:
        """The Graph error one invalid event fails the whole request with, if any."""
        for key in ("event_name", "event_time", "action_source"):
            if not event.get(key):
                return graph_error(
                    400,
                    "Invalid parameter",
                    100,
                    subcode=2804008,
                    title="Missing Parameter",
                    user_msg=f"The parameter {key} is required for every event.",
                )
        if not isinstance(event["event_time"], int):
            return graph_error(
                400,
                "Invalid parameter",
                100,
                title="Invalid Event Time",
                user_msg="event_time must be a Unix timestamp in seconds.",
            )
        if now - event["event_time"] > MAX_AGE_S:
            return graph_error(
                400,
                "Invalid parameter",
                100,
                subcode=2804003,
                title="Event Timestamp Too Old",
                user_msg="The timestamp for this event is too far in the past. Events need to be "
                "sent from your server within 7 days of when they occurred. Enter a timestamp "
                "that has occurred within the last 7 days.",
            )
        if event["action_source"] not in ACTION_SOURCES:
            return graph_error(
                400,
                "Invalid parameter",
                100,
                title="Invalid Action Source",
                user_msg=f"action_source '{event['action_source']}' is not a valid value.",
            )
        user = event.get("user_data") or {}
        if event["action_source"] == "website" and not user.get("client_user_agent"):
            return graph_error(
                400,
                "Invalid parameter",
                100,
                title="Missing User Agent",
                user_msg="client_user_agent is required for events with action_source website.",
            )
        for key in HASHED:
            values = user.get(key)
            for value in values if isinstance(values, list) else [values]:
                if value is not None and not _SHA256.match(str(value)):
                    return graph_error(
                        400,
                        "Invalid parameter",
                        100,
                        title="Unhashed Customer Information",
                        user_msg=f"The value of user_data.{key} must be a SHA-256 hash of the "
                        "normalized value.",
                    )
        if not any(user.get(k) for k in CUSTOMER_KEYS):
            return graph_error(
                400,
                "Invalid parameter",
                100,
                title="Missing Customer Information",
                user_msg="user_data must contain at least one customer information parameter.",
            )
        return None

    def get_pixel(self, request: Request, version: str, pixel_id: str) -> Response:
        """`GET /{version}/{pixel_id}?fields=id,name`: the pixel (AdsPixel) node."""
        if request.args.get("access_token") != self.access_token:
            return graph_error(400, "Invalid OAuth access token - Cannot parse access token", 190)
        if pixel_id != self.pixel_id:
            return graph_error(
                400,
                f"Unsupported get request. Object with ID '{pixel_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                100,
                subcode=33,
                type_="GraphMethodException",
            )
        node = {"id": pixel_id, "name": "Fake pixel"}
        fields = request.args.get("fields", "id").split(",")
        return _json(200, {k: v for k, v in node.items() if k in fields or k == "id"})

    def post_events(self, request: Request, version: str, pixel_id: str) -> Response:
        params = self._params(request)
        if params.get("access_token") != self.access_token:
            return graph_error(400, "Invalid OAuth access token - Cannot parse access token", 190)
        if pixel_id != self.pixel_id:
            return graph_error(
                400,
                f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation. "
                "Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api",
                100,
                subcode=33,
                type_="GraphMethodException",
            )
        if problems := contract.problems(params):
            self.contract_failures.append(problems)
            return graph_error(
                400,
                "Invalid parameter",
                100,
                title="Invalid Parameter",
                user_msg="; ".join(problems[:5]),
            )
        data = params.get("data")
        if not isinstance(data, list) or not data:
            return graph_error(400, "(#100) The parameter data is required", 100)
        if len(data) > MAX_EVENTS:
            return graph_error(
                400,
                "Invalid parameter",
                100,
                user_msg=f"A request can hold at most {MAX_EVENTS} events; it held {len(data)}.",
            )
        now = time.time()
        for event in data:
            if (bad := self._invalid(event, now)) is not None:
                return bad
        target = self.test_events if params.get("test_event_code") else self.events
        for event in data:
            dedup = (str(event["event_name"]), str(event.get("event_id")))
            if event.get("event_id") and dedup in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(dedup)
            target.append(event)
        return _json(
            200,
            {"events_received": len(data), "messages": [], "fbtrace_id": secrets.token_hex(8)},
        )
