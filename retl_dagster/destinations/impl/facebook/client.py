"""Meta Conversions API: `POST /{version}/{pixel_id}/events` with `data` (at most 1,000 server
events) and `access_token`. One invalid event fails the whole request with a Graph API error
(`{"error": {"message", "type", "code", "error_subcode", "error_user_msg", "fbtrace_id"}}`), so
a refused request is halved until the bad event is isolated and only it is rejected. Codes 4, 17,
32, 613 (and HTTP 429) are throttling: backed off and retried; 190 is a bad token.

A 2xx answer says `events_received` and nothing about matching, so runs show how many events
carried a customer identifier and no match rate.

An event's time is its mapped `event_time`; rows that map none (or hold none) take the run's
start time, the same on every retry and replay (Meta drops a resend by event_id + event_name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from retl_dagster.common.encoding import event_time_or
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
    build_items,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.hashing import stable_event_id
from retl_dagster.destinations.http import HttpClient, error_object, error_text
from retl_dagster.destinations.impl.facebook import normalize
from retl_dagster.destinations.impl.facebook.config import MAX_EVENTS, FacebookConversionsConfig
from retl_dagster.destinations.impl.facebook.exceptions import FacebookAuthError, InvalidValue

THROTTLING_CODES = frozenset({4, 17, 32, 613, 80004})
"""Graph API rate limiting: application, user, page, custom and ads-management call limits."""
SERVER_EVENT_KEYS = (
    "event_source_url",
    "opt_out",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
    "referrer_url",
)
"""Mapped fields that go on the event itself; every other non-customer field is custom_data."""
EVENT_KEYS = ("event_name", "event_time", "event_id", "action_source", *SERVER_EVENT_KEYS)
ALIASES = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "postal_code": "zp",
    "country_code": "country",
    "gender": "ge",
    "date_of_birth": "db",
    "birthday": "db",
    "ip": "client_ip_address",
    "user_agent": "client_user_agent",
}
"""Field names people reach for, and the customer information key Meta expects instead."""


def is_transient(response: httpx.Response) -> bool:
    """429, 5xx, Graph throttling codes (sent with a 4xx) and errors Meta marks transient."""
    if response.status_code == 429 or response.status_code >= 500:
        return True
    if response.is_success:
        return False
    err = error_object(response)
    return err.get("code") in THROTTLING_CODES or err.get("is_transient") is True


def error_message(err: dict[str, Any], response: httpx.Response) -> str:
    """Meta's own words: message, the user-facing title and text, codes and trace id."""
    if not err:
        return error_text(response)
    text = str(err.get("message", "")).strip()
    user = ": ".join(str(err[k]) for k in ("error_user_title", "error_user_msg") if err.get(k))
    if user:
        text += f" ({user})"
    codes = str(err.get("code", ""))
    if err.get("error_subcode"):
        codes += f"/{err['error_subcode']}"
    return f"{text} [code {codes}, fbtrace_id {err.get('fbtrace_id', '-')}]"


def event_id(sync: str, key: str) -> str:
    """Stable per row: a resent or replayed event carries the same id, so Meta keeps one."""
    return stable_event_id(sync, key)


def unix_seconds(value: Any, default: dt.datetime) -> int:
    """`event_time` (Unix seconds) from a mapped timestamp; `default` when the row has none."""
    try:
        return int(event_time_or(value, default).timestamp())
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None


class FacebookConversionsDestination(Destination[FacebookConversionsConfig]):
    type: ClassVar[str] = "facebook_conversions"
    config_class = FacebookConversionsConfig
    modes = frozenset({"events"})
    delete_behaviors = frozenset({"nothing"})
    max_batch_size = MAX_EVENTS
    reports_match = True
    event_time_field = "event_time"

    def __init__(self, name: str, config: FacebookConversionsConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name, config, base_url=str(config.base_url).rstrip("/"), is_transient=is_transient
        )
        self.path = f"/{config.api_version}/{config.pixel_id}/events"

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if not sync.object and "event_name" not in sync.fields:
            problems.append(
                (
                    "object",
                    "Meta needs an event name",
                    "set object to the event name (e.g. Purchase) or map a column to event_name",
                )
            )
        return problems + cls.aliased_fields(
            sync,
            ALIASES,
            "Meta's customer information key for",
            " (it is then normalised and hashed)",
        )

    def _event(self, batch: Batch, record: Record, notes: list[str]) -> dict[str, Any]:
        fields = dict(record.fields)
        name = fields.get("event_name") or batch.object
        if not name:
            raise InvalidValue("no event name: the row's event_name is empty")
        event_time = unix_seconds(fields.get("event_time"), batch.run_time)
        event: dict[str, Any] = {
            "event_name": str(name),
            "event_time": event_time,
            # A mapped event_id (the one the browser pixel sent) lets Meta drop the duplicate.
            "event_id": str(fields.get("event_id") or event_id(batch.sync, record.key)),
            "action_source": fields.get("action_source") or self.config.action_source,
            "user_data": normalize.user_data(fields, self.config.default_phone_country_code, notes),
        }
        for key in SERVER_EVENT_KEYS:
            if fields.get(key) is not None:
                event[key] = fields[key]
        custom = {
            k: v
            for k, v in fields.items()
            if k not in EVENT_KEYS and k not in normalize.USER_DATA_KEYS and v is not None
        }
        if custom:
            event["custom_data"] = custom
        return event

    def check(self, object_: str | None = None) -> str:
        """`GET /{version}/{pixel_id}?fields=id,name`: the token is accepted and reaches the
        pixel. (Sending a test event would need Events Manager's test code; this sends none.)"""
        pixel = self.config.pixel_id
        response = self.client.request(
            "GET",
            f"/{self.config.api_version}/{pixel}",
            params={
                "fields": "id,name",
                "access_token": self.config.access_token.get_secret_value(),
            },
        )
        if not response.is_success:
            err = error_object(response)
            if err.get("code") == 190 or response.status_code == 401:
                raise FacebookAuthError(
                    f"destination '{self.name}': Meta refused the access token: "
                    f"{error_message(err, response)}. Fix: generate a new system-user token "
                    "with access to the pixel"
                )
            raise FacebookAuthError(
                f"destination '{self.name}': pixel {pixel} cannot be read: "
                f"{error_message(err, response)}. Fix: check pixel_id and that the token's "
                "user has access to it (Business settings > Data sources > Datasets)"
            )
        body = response.json()
        name = body.get("name") if isinstance(body, dict) else None
        named = f" ('{name}')" if name else ""
        return f"Meta access token accepted; pixel {pixel}{named} readable"

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        events = build_items(
            batch.records, out, lambda r, notes: self._event(batch, r, notes), InvalidValue
        )
        budget = self.request_budget()

        def send(chunk: Sequence[tuple[Record, dict[str, Any]]]) -> str | None:
            return self._send(chunk, out)

        def reject(item: tuple[Record, dict[str, Any]], reason: str) -> None:
            out.rejected[item[0].key] = reason

        for i in range(0, len(events), MAX_EVENTS):
            # One bad event fails Meta's whole request: halved until it is isolated.
            send_isolating(events[i : i + MAX_EVENTS], send, reject, budget)
        out.identified = sum(
            1
            for record, event in events
            if record.key not in out.rejected and normalize.identifies(event["user_data"])
        )
        return out

    def _send(self, chunk: Sequence[tuple[Record, dict[str, Any]]], out: BatchResult) -> str | None:
        """One request; Meta's reason when a Graph API error refused it whole. Raises when the
        token or the pixel is out of reach."""
        body: dict[str, Any] = {
            "data": [event for _, event in chunk],
            "access_token": self.config.access_token.get_secret_value(),
        }
        if self.config.test_event_code:
            body["test_event_code"] = self.config.test_event_code
        response = self.client.request("POST", self.path, json=body)
        if response.is_success:
            return None
        err = error_object(response)
        code, subcode = err.get("code"), err.get("error_subcode")
        if code == 190 or response.status_code == 401:
            raise FacebookAuthError(
                f"destination '{self.name}': Meta refused the access token: "
                f"{error_message(err, response)}. Fix: generate a new system-user token with "
                "access to the pixel"
            )
        if code == 10 or (isinstance(code, int) and 200 <= code < 300) or subcode == 33:
            # The pixel itself is out of reach: every event would fail the same way.
            raise FacebookAuthError(
                f"destination '{self.name}': pixel {self.config.pixel_id} cannot receive "
                f"events: {error_message(err, response)}. Fix: check pixel_id and that the "
                "token's user has access to it"
            )
        reason = error_message(err, response)
        if err:
            return reason  # an event in the request was refused: isolate it
        for record, _ in chunk:
            out.rejected[record.key] = reason
        return None

    def close(self) -> None:
        self.client.close()
