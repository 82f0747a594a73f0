"""TikTok Events API 2.0: `POST /open_api/v1.3/event/track/` with `event_source` (`web`, `app`,
`offline`, `crm`), `event_source_id` (the pixel code, app id or event set id) and `data`, at
most 1,000 events, each `{"event", "event_time" (Unix seconds), "event_id", "user", "properties",
"page"}`.

A sync's mapped fields become:
- `event` (else the sync's `object`), `event_time` (else the run's start, the same on every
  retry and replay of the run), `event_id` (else one stable per row, so TikTok drops a resent
  event), `limited_data_use`;
- `user`: `email`, `phone`, `external_id` normalised and SHA-256 hashed (TikTok refuses them
  unhashed); `ttclid`, `ttp`, `ip`, `user_agent`, `locale`, `lead_id` as they are;
- `page`: `url`, `referrer`;
- `properties`: `value`, `currency`, `contents` (a list of objects), `content_type`, `query`,
  `description`, `order_id`, `shop_id`, and every other field (custom properties).

TikTok answers HTTP 200 with `code` != 0 for an error. A parameter error (40002) or unhashed
personal data (40062) refuses the whole request, so it is halved until the refused event is
alone and only that row is rejected, in TikTok's words. A success says nothing about matching:
runs show how many events carried an identifier and no match rate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

from retl_dagster.common.encoding import event_time_or
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationError,
    Problem,
    Record,
    SyncShape,
    build_items,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.hashing import stable_event_id
from retl_dagster.destinations.impl.tiktok import normalize
from retl_dagster.destinations.impl.tiktok.client import PARAM_ERROR, PII_NOT_HASHED, TikTokApi
from retl_dagster.destinations.impl.tiktok.config import MAX_EVENTS, TikTokEventsConfig
from retl_dagster.destinations.impl.tiktok.exceptions import InvalidValue

HASHED_USER_KEYS = ("email", "phone", "external_id")
"""Identifiers TikTok takes only as SHA-256 digests."""
PLAIN_USER_KEYS = ("ttclid", "ttp", "ip", "user_agent", "locale", "lead_id")
"""User keys TikTok must receive as they are."""
USER_KEYS = HASHED_USER_KEYS + PLAIN_USER_KEYS
PAGE_KEYS = ("url", "referrer")
EVENT_KEYS = ("event", "event_time", "event_id", "limited_data_use")
IDENTIFYING_KEYS = ("email", "phone", "external_id", "ttclid", "ttp", "lead_id")
"""User keys that point at one person by themselves (an IP address and user agent only
together)."""
REFUSED_FOR_AN_EVENT = frozenset({PARAM_ERROR, PII_NOT_HASHED})
"""Codes with which one event in a request refuses it all: isolate that event."""
ALIASES = {
    "event_name": "event",
    "timestamp": "event_time",
    "em": "email",
    "ph": "phone",
    "phone_number": "phone",
    "client_ip_address": "ip",
    "client_user_agent": "user_agent",
    "page_url": "url",
    "event_source_url": "url",
}
"""Names people bring from other event APIs, and TikTok's name for the same thing."""


def event_id(sync: str, key: str) -> str:
    """Stable per row: a resent or replayed event carries the same id, so TikTok keeps one."""
    return stable_event_id(sync, key)


def unix_seconds(value: Any, default: dt.datetime) -> int:
    """`event_time` (Unix seconds) from a mapped timestamp; `default` when the row has none."""
    try:
        return int(event_time_or(value, default).timestamp())
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None


def identifies(user: dict[str, Any]) -> bool:
    """Whether `user` can point TikTok at one person."""
    if any(user.get(k) for k in IDENTIFYING_KEYS):
        return True
    return bool(user.get("ip") and user.get("user_agent"))


class TikTokEventsDestination(Destination[TikTokEventsConfig]):
    type: ClassVar[str] = "tiktok_events"
    config_class = TikTokEventsConfig
    modes = frozenset({"events"})
    delete_behaviors = frozenset({"nothing"})
    max_batch_size = MAX_EVENTS
    reports_match = True
    event_time_field = "event_time"

    def __init__(self, name: str, config: TikTokEventsConfig) -> None:
        super().__init__(name, config)
        self.api = TikTokApi(
            name, config, f"{config.event_source} event source {config.event_source_id}"
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if not sync.object and "event" not in sync.fields:
            problems.append(
                (
                    "object",
                    "TikTok needs an event name",
                    "set object to the event name (e.g. CompletePayment) or map a column to event",
                )
            )
        return problems + cls.aliased_fields(sync, ALIASES, "TikTok's name for")

    # -- building events ----------------------------------------------------------------------
    def _user(self, fields: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        user: dict[str, Any] = {}
        for key in HASHED_USER_KEYS:
            value = fields.get(key)
            if isinstance(value, (list, dict)):
                raise InvalidValue(f"{key} holds several values: map one {key} per row")
            try:
                digest = normalize.hashed(key, value, self.config.default_phone_country_code)
            except ValueError as exc:  # a phone that cannot be put in E.164: left out
                notes.append(str(exc))
                continue
            if digest:
                user[key] = digest
        for key in PLAIN_USER_KEYS:
            if fields.get(key) not in (None, ""):
                user[key] = str(fields[key])
        return user

    @staticmethod
    def _properties(fields: dict[str, Any]) -> dict[str, Any]:
        reserved = {*EVENT_KEYS, *USER_KEYS, *PAGE_KEYS}
        props = {k: v for k, v in fields.items() if k not in reserved and v is not None}
        if "value" in props:
            try:
                props["value"] = float(props["value"])
            except (TypeError, ValueError):
                raise InvalidValue(f"value {props['value']!r} is not a number") from None
        if "currency" in props:
            props["currency"] = str(props["currency"]).strip().upper()
        contents = props.get("contents")
        if contents is not None and not (
            isinstance(contents, list) and all(isinstance(c, dict) for c in contents)
        ):
            raise InvalidValue("contents must be a list of objects (content_id, price...)")
        return props

    def _event(self, batch: Batch, record: Record, notes: list[str]) -> dict[str, Any]:
        fields = record.fields
        name = fields.get("event") or batch.object
        if not name:
            raise InvalidValue("no event name: the row's event is empty")
        event: dict[str, Any] = {
            "event": str(name),
            "event_time": unix_seconds(fields.get("event_time"), batch.run_time),
            # A mapped event_id (the one the pixel sent) lets TikTok drop the duplicate.
            "event_id": str(fields.get("event_id") or event_id(batch.sync, record.key)),
            "user": self._user(fields, notes),
        }
        page = {k: str(fields[k]) for k in PAGE_KEYS if fields.get(k) not in (None, "")}
        if page:
            event["page"] = page
        if props := self._properties(fields):
            event["properties"] = props
        if fields.get("limited_data_use") is not None:
            event["limited_data_use"] = bool(fields["limited_data_use"])
        return event

    # -- delivering ---------------------------------------------------------------------------
    def _body(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_source": self.config.event_source,
            "event_source_id": self.config.event_source_id,
            "data": list(events),
        }
        if self.config.test_event_code:
            body["test_event_code"] = self.config.test_event_code
        return body

    def check(self, object_: str | None = None) -> str:
        """`POST /event/track/` with no events: TikTok checks the token and its access to the
        event source before it reads `data` (an empty one is then a parameter error), so this
        proves both and sends no record."""
        answer = self.api.post("/event/track/", self._body([]))  # token refused: raises
        if not answer.ok and answer.code != PARAM_ERROR:
            raise DestinationError(
                f"destination '{self.name}': TikTok's Events API did not answer as expected: "
                f"{answer}. Fix: check base_url and api_version"
            )
        return (
            f"TikTok access token accepted for {self.config.event_source} event source "
            f"{self.config.event_source_id}"
        )

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        events = build_items(
            batch.records, out, lambda r, notes: self._event(batch, r, notes), InvalidValue
        )
        budget = self.request_budget()

        def send(chunk: Sequence[tuple[Record, dict[str, Any]]]) -> str | None:
            answer = self.api.post("/event/track/", self._body([e for _, e in chunk]))
            if answer.ok:
                return None
            if answer.code in REFUSED_FOR_AN_EVENT:
                return str(answer)  # an event in the request was refused: isolate it
            for record, _ in chunk:  # refused for no one event's sake: all of it, as it said
                out.rejected[record.key] = str(answer)
            return None

        def reject(item: tuple[Record, dict[str, Any]], reason: str) -> None:
            out.rejected[item[0].key] = reason

        for i in range(0, len(events), MAX_EVENTS):
            send_isolating(events[i : i + MAX_EVENTS], send, reject, budget)
        out.identified = sum(
            1
            for record, event in events
            if record.key not in out.rejected and identifies(event["user"])
        )
        return out

    def close(self) -> None:
        self.api.close()
