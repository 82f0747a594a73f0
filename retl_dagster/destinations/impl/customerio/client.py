"""Customer.io's Track API (`POST /api/v2/batch`, HTTP basic auth `site_id:api_key`).

Objects, as the Track API v2 names its person operations:
- `people` (or no object; mode upsert): one `{"type": "person", "action": "identify",
  "identifiers": {<id|email|cio_id>: ...}, "attributes": {...}}` per row, an upsert of the
  person's attributes; `delete_behavior: delete` sends `"action": "delete"` for a removed row.
  Nulls are left out (the sync never clears an attribute by sending null).
- any other object (mode events): the event's name; one `"action": "event"` per row with the
  row's person identifier, `timestamp` (unix seconds: the mapped event time, else the run's
  start), an `id` that is a ULID stable per row (Customer.io drops a resent event with the same
  one) and the other fields as `attributes`.

Limits (docs.customer.io, Track API): a batch body under 500 KB and each operation under 32 KB
(an operation past it is rejected here, naming the limit); chunks follow the bytes. A fair-use
limit of 100 requests a second for the Track API is the destination's shared budget; a 429 waits
for `Retry-After` (else backs off).

Errors: the batch answer lists refused operations in `errors[]` (`batch_index`, `reason`,
`field`, `message`): exactly those rows are rejected with the message. A request refused whole
without indexes (400/413) is halved until the refused rows are alone (bisect.send_isolating).
401/403 fail the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from retl_dagster.common.encoding import parse_event_time
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.customerio.config import (
    MAX_BATCH_BYTES,
    MAX_CONCURRENCY,
    MAX_OPERATION_BYTES,
    MAX_RECORDS,
    CustomerIOConfig,
)
from retl_dagster.destinations.impl.customerio.exceptions import (
    CustomerIOAuthError,
    CustomerIOError,
)

BATCH_PATH = "/api/v2/batch"
REGION_PATH = "/api/v1/accounts/region"
TRACK_RPS = 100.0
"""The Track API's documented fair-use limit (v1 and v2), per workspace."""
IDENTIFIERS = ("id", "email", "cio_id")
"""How the Track API v2 identifies a person (the `customerio` SDK's ID, EMAIL, CIOID)."""
PEOPLE = "people"
MAX_EVENT_NAME = 100
"""Longest event name sent; Customer.io trims names and a longer one is rarely intended."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

Item = tuple[Record, dict[str, Any]]


def event_ulid(when: dt.datetime, sync: str, record: Record) -> str:
    """A ULID (48-bit ms time + 80 bits) whose random part is a hash of the row: the same row
    always gets the same id, so a resend after a retry or a crash is deduplicated."""
    raw = json.dumps([sync, record.key, record.fields], sort_keys=True, default=str)
    tail = int.from_bytes(hashlib.sha256(raw.encode()).digest()[:10], "big")
    ms = max(0, int(when.timestamp() * 1000)) & ((1 << 48) - 1)
    value = (ms << 80) | tail
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def batch_errors(response: httpx.Response) -> dict[int, str]:
    """`errors[]` of a batch answer: operation index -> `message (field)`."""
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    out: dict[int, str] = {}
    for err in errors if isinstance(errors, list) else []:
        if not isinstance(err, dict) or not isinstance(err.get("batch_index"), int):
            continue
        text = str(err.get("message") or err.get("reason") or "refused")
        field = err.get("field")
        out[err["batch_index"]] = f"{text} ({field})" if field else text
    return out


def _size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, default=str, separators=(",", ":")).encode())


class CustomerIODestination(Destination[CustomerIOConfig]):
    type: ClassVar[str] = "customerio"
    config_class = CustomerIOConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "events"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_RECORDS
    accepts_nulls = False  # never clears an attribute by sending null
    requires_match = frozenset({"upsert", "events"})
    event_time_field = "timestamp"

    def __init__(self, name: str, config: CustomerIOConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            refused=lambda response: CustomerIOAuthError(
                f"destination '{name}': Customer.io refused the site id and API key "
                f"({error_text(response)}). Fix: use a Track API key pair from Settings > API "
                "Credentials, and region: eu for a workspace in the EU data centre"
            ),
            base_url=config.track_url,
            default_rps=TRACK_RPS,
        )
        self.client.http.auth = httpx.BasicAuth(config.site_id, config.api_key.get_secret_value())

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        object_ = sync.object or ""
        if sync.match_field is not None and sync.match_field not in IDENTIFIERS:
            problems.append(
                (
                    "match.field",
                    f"Customer.io identifies people by {', '.join(IDENTIFIERS)}",
                    "match on one of those",
                )
            )
        if sync.mode == "upsert" and object_ not in ("", PEOPLE):
            problems.append(
                (
                    "object",
                    f"mode upsert identifies people, and '{object_}' is not 'people'",
                    "use object: people (or leave it out), or mode: events with the event's name",
                )
            )
        if sync.mode == "events" and object_ in ("", PEOPLE):
            problems.append(
                (
                    "object",
                    "in mode events the object is the event's name",
                    "set object to the event name (e.g. plan_upgraded)",
                )
            )
        if sync.mode == "events" and len(object_) > MAX_EVENT_NAME:
            problems.append(("object", "the event name is over 100 characters", "shorten it"))
        return problems

    def check(self, object_: str | None = None) -> str:
        """`GET /api/v1/accounts/region`: the credentials' region (read-only)."""
        response = self.client.request("GET", REGION_PATH)
        if not response.is_success:
            raise CustomerIOError(
                f"destination '{self.name}': GET {REGION_PATH} answered {error_text(response)}. "
                "Fix: check region / base_url"
            )
        body = response.json() if response.content else {}
        centre = str(body.get("data_center") or "?")
        if self.config.base_url is None and centre in ("us", "eu") and centre != self.config.region:
            raise CustomerIOError(
                f"destination '{self.name}': the workspace is in the {centre.upper()} data centre "
                f"but region is '{self.config.region}'. Fix: set region: {centre}"
            )
        return f"Customer.io accepts the Track API key (workspace in the {centre.upper()} region)"

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        items: list[Item] = []
        for r in batch.records:
            try:
                op = self._operation(batch, r)
            except ValueError as exc:
                out.rejected[r.key] = str(exc)
                continue
            if op is None:
                continue
            if _size(op) >= MAX_OPERATION_BYTES:
                out.rejected[r.key] = (
                    f"the operation is {_size(op):,} bytes; Customer.io takes under 32 KB each. "
                    "Fix: map fewer or shorter fields"
                )
                continue
            items.append((r, op))
        budget = self.request_budget()
        for chunk in _by_bytes(items):
            send_isolating(
                chunk,
                lambda part: self._send(part, out),
                lambda item, reason: out.rejected.__setitem__(item[0].key, reason),
                budget,
            )
        return out

    def _operation(self, batch: Batch, record: Record) -> dict[str, Any] | None:
        field = batch.match_field or "id"
        if record.match_value is None or record.match_value == "":
            raise ValueError(f"no {field} to identify the person by (the match column is empty)")
        identifiers = {field: str(record.match_value)}
        if record.op == "removed":
            if batch.mode == "events":
                return None
            return {"type": "person", "action": "delete", "identifiers": identifiers}
        fields = {k: v for k, v in record.fields.items() if v is not None}
        if batch.mode != "events":
            return {
                "type": "person",
                "action": "identify",
                "identifiers": identifiers,
                "attributes": fields,
            }
        raw_time = fields.pop("timestamp", None)
        when = parse_event_time(raw_time) if raw_time is not None else batch.run_time
        return {
            "type": "person",
            "action": "event",
            "identifiers": identifiers,
            "name": batch.object,
            "id": event_ulid(when, batch.sync, record),
            "timestamp": int(when.timestamp()),
            "attributes": fields,
        }

    def _send(self, chunk: Sequence[Item], out: BatchResult) -> str | None:
        """One batch request; rows Customer.io refuses by index are rejected, and the rest
        resent where the request as a whole was refused (identify is an upsert, and an event's
        id dedupes it, so a resend is harmless)."""
        pending = list(chunk)
        while pending:
            response = self.client.request(
                "POST", BATCH_PATH, json={"batch": [op for _, op in pending]}
            )
            indexed = batch_errors(response)
            for i, reason in indexed.items():
                if 0 <= i < len(pending):
                    out.rejected[pending[i][0].key] = reason
            if response.is_success:
                return None
            if response.status_code not in (400, 413):
                raise CustomerIOError(
                    f"destination '{self.name}': POST {BATCH_PATH} answered "
                    f"{error_text(response)}; its records are sent again by the next run"
                )
            if not indexed:
                return error_text(response)  # refused whole: bisect finds the culprit
            pending = [item for i, item in enumerate(pending) if i not in indexed]
        return None

    def close(self) -> None:
        self.client.close()


def _by_bytes(items: list[Item]) -> list[list[Item]]:
    """`items` in chunks whose `{"batch": [...]}` body stays under MAX_BATCH_BYTES."""
    limit = MAX_BATCH_BYTES - 1_000  # room for the envelope
    chunks: list[list[Item]] = []
    current: list[Item] = []
    used = 0
    for item in items:
        n = _size(item[1]) + 1
        if current and used + n > limit:
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        chunks.append(current)
    return chunks
