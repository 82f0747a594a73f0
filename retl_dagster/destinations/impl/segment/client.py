"""Segment's HTTP Tracking API (`/v1/batch`): write-key basic auth, at most 500 KB a batch and
32 KB a call; `messageId` stable per record so Segment drops a resent duplicate.

Time: a mapped `timestamp` column becomes the call's own `timestamp` (ISO 8601, as the official
SDK writes it), never a property or trait. A row without one gets the run's start time rather
than no timestamp (which Segment would fill with the time it received the call): the same on
every retry and replay of the run, and the same instant the Mixpanel and Braze destinations
give such rows."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any, ClassVar

import orjson

from retl_dagster.common.encoding import parse_event_time
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.http import HttpClient, error_text, probe
from retl_dagster.destinations.impl.segment.config import MAX_CONCURRENCY, SegmentConfig
from retl_dagster.destinations.impl.segment.exceptions import SegmentAuthError

# Segment documents 500 KB a batch request; its official Python SDK (segment-analytics-python,
# segment.analytics.consumer.BATCH_SIZE_LIMIT) cuts batches at 475,000 bytes to leave room for
# what goes on the request besides the calls. We use the SDK's figure.
MAX_BATCH_BYTES = 475_000
MAX_CALL_BYTES = 32 * 1024
"""Per call, documented and enforced by the SDK too (segment.analytics.consumer.MAX_MSG_SIZE)."""


def message_id(sync: str, record: Record) -> str:
    """Same record content -> same messageId, across retries and resends."""
    raw = json.dumps([sync, record.op, record.key, record.fields], sort_keys=True, default=str)
    return "retl-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def segment_time(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, the form the official SDK sends."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


class SegmentDestination(Destination[SegmentConfig]):
    type: ClassVar[str] = "segment"
    config_class = SegmentConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "events"})
    delete_behaviors = frozenset({"nothing"})
    max_batch_size = 2500
    requires_object = True
    event_time_field = "timestamp"

    def __init__(self, name: str, config: SegmentConfig) -> None:
        super().__init__(name, config)
        auth = base64.b64encode(f"{config.write_key.get_secret_value()}:".encode()).decode()
        self.client = HttpClient(
            name,
            config,
            base_url=str(config.base_url).rstrip("/"),
            headers={"Authorization": f"Basic {auth}"},
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        mode, object_, match_field = sync.mode, sync.object, sync.match_field
        problems: list[Problem] = []
        if mode == "upsert" and object_ not in (None, "identify"):
            problems.append(
                (
                    "object",
                    f"upsert sends identify calls, not '{object_}'",
                    "use object: identify, or mode: events with the event name",
                )
            )
        if match_field not in (None, "userId", "anonymousId"):
            problems.append(
                (
                    "match.field",
                    f"Segment identifies users by userId or anonymousId, not '{match_field}'",
                    "use userId or anonymousId",
                )
            )
        return problems

    def _call(self, batch: Batch, record: Record, run_started: str) -> dict[str, Any]:
        """The record's call; ValueError for a mapped timestamp that is not one.
        `run_started`: the run's start in Segment's form, for records that map no time."""
        who = batch.match_field or "userId"
        ident = record.match_value if record.match_value is not None else record.key
        fields = dict(record.fields)
        when = (
            segment_time(parse_event_time(fields.pop("timestamp")))
            if "timestamp" in fields
            else run_started
        )
        call: dict[str, Any] = {
            who: str(ident),
            "messageId": message_id(batch.sync, record),
            "timestamp": when,
            "context": {"library": {"name": "retl-dagster"}},
        }
        if batch.mode == "events":
            call.update(type="track", event=batch.object, properties=fields)
        else:
            call.update(type="identify", traits=fields)
        return call

    def check(self, object_: str | None = None) -> str:
        """Segment's Tracking API has no read endpoint, and any call it accepts is a real
        message: only the endpoint's reachability is checked (a GET with no write key)."""
        url = str(self.config.base_url).rstrip("/") + "/v1/batch"
        response = probe(self.name, self.config, "GET", url)
        return (
            f"Segment endpoint {self.config.base_url} is reachable (HTTP {response.status_code}); "
            "the write key cannot be checked without sending a call, so it is not"
        )

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        chunk: list[tuple[Record, bytes]] = []
        size = 0
        run_started = segment_time(batch.run_time)
        for record in batch.records:
            try:
                call = self._call(batch, record, run_started)
            except ValueError as exc:
                out.rejected[record.key] = f"timestamp: {exc}"
                continue
            # orjson: a tenth of the standard library's time; values are JSON-ready (the
            # mapper made NaN null), and its UTF-8 is what is sent, so the size is exact.
            encoded = orjson.dumps(call)
            if len(encoded) > MAX_CALL_BYTES:
                out.rejected[record.key] = (
                    f"call is {len(encoded)} bytes; Segment accepts at most 32 KB a call: "
                    "map fewer or smaller columns"
                )
                continue
            if chunk and size + len(encoded) + 64 > MAX_BATCH_BYTES:
                self._send(chunk, out)
                chunk, size = [], 0
            chunk.append((record, encoded))
            size += len(encoded) + 1
        if chunk:
            self._send(chunk, out)
        return out

    def _send(self, chunk: list[tuple[Record, bytes]], out: BatchResult) -> None:
        body = b'{"batch":[' + b",".join(e for _, e in chunk) + b"]}"
        response = self.client.request(
            "POST", "/v1/batch", content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code == 401:
            raise SegmentAuthError(
                f"destination '{self.name}': Segment refused the write key ({error_text(response)})"
            )
        if not response.is_success:
            for record, _ in chunk:
                out.rejected[record.key] = error_text(response)

    def close(self) -> None:
        self.client.close()
