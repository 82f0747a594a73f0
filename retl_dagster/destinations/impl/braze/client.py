"""Braze REST API: `/users/track` (at most 75 attributes + events + purchases objects a request;
`{"message": "success", "errors": [{"type", "input_array", "index"}]}` names the objects it
refused) and `/users/delete` (at most 50 ids). REST API key as Bearer; a 429 carries
`X-RateLimit-Reset` (epoch seconds).

Events and purchases carry their own `time` (ISO 8601, required by Braze's event and purchase
objects): the mapped `time` column, else the run's start time (the same on every retry and replay
of the run). It is never one of the object's `properties`; nor is a purchase's `quantity`, which
is the purchase object's own field (an integer, 1 to 100)."""

from __future__ import annotations

import datetime as dt
import math
import time
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
from retl_dagster.destinations.http import HttpClient, error_text, probe
from retl_dagster.destinations.impl.braze.config import (
    MAX_CONCURRENCY,
    MAX_TRACK_OBJECTS,
    BrazeConfig,
)
from retl_dagster.destinations.impl.braze.exceptions import BrazeAuthError

MAX_DELETE_IDS = 50
IDENTIFIERS = ("external_id", "email", "braze_id")
PURCHASE_FIELDS = ("product_id", "currency", "price")
MAX_QUANTITY = 100
"""Braze's purchase object: `quantity` is an integer, at most 100."""
SUBSCRIPTION_PREFIX = "subscription_group:"
SUBSCRIPTION_STATE = "subscription_state"


def rate_limit_reset(response: httpx.Response) -> float | None:
    """Seconds until `X-RateLimit-Reset` (an epoch timestamp), Braze's wait hint."""
    reset = response.headers.get("X-RateLimit-Reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset else None
    except ValueError:
        return None


def braze_time(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. `2026-01-31T12:00:00.000+00:00`."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def quantity(value: Any) -> int:
    """A purchase's quantity as Braze takes it: a whole number from 1 to 100."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or not 1 <= number <= MAX_QUANTITY:
        raise ValueError(
            f"quantity {value!r} is not a whole number from 1 to {MAX_QUANTITY}, as Braze requires"
        )
    return int(number)


class BrazeDestination(Destination[BrazeConfig]):
    type: ClassVar[str] = "braze"
    config_class = BrazeConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "update", "mirror", "events"})
    max_batch_size = MAX_TRACK_OBJECTS
    requires_object = True
    requires_match = frozenset({"upsert", "update", "mirror", "events"})
    event_time_field = "time"

    def __init__(self, name: str, config: BrazeConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            base_url=str(config.base_url).rstrip("/"),
            headers={"Authorization": f"Bearer {config.api_key.get_secret_value()}"},
            default_rps=1000.0,
            wait_hint=rate_limit_reset,
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        mode, object_, match_field = sync.mode, sync.object, sync.match_field
        problems: list[Problem] = []
        if match_field is not None and match_field not in IDENTIFIERS:
            problems.append(
                (
                    "match.field",
                    f"Braze identifies users by {', '.join(IDENTIFIERS)}",
                    "match on one of those",
                )
            )
        group = (object_ or "").startswith(SUBSCRIPTION_PREFIX)
        if mode != "events" and object_ != "users" and not group:
            problems.append(
                (
                    "object",
                    f"mode {mode} writes user attributes",
                    "use object: users or subscription_group:<id>, or mode: events with an "
                    "event name or purchases",
                )
            )
        if group and (mode not in ("upsert", "update") or SUBSCRIPTION_STATE not in sync.fields):
            problems.append(
                (
                    "object",
                    "a subscription group sync sets each user's subscription_state",
                    "use mode upsert and map a column (subscribed / unsubscribed) to "
                    "subscription_state",
                )
            )
        if mode == "events" and object_ == "purchases":
            missing = [f for f in PURCHASE_FIELDS if f not in sync.fields]
            if missing:
                problems.append(
                    (
                        "mappings",
                        f"purchases need {', '.join(missing)}",
                        f"map columns to {', '.join(PURCHASE_FIELDS)}",
                    )
                )
        if sync.delete_behavior == "delete" and match_field not in (None, "external_id"):
            problems.append(
                (
                    "delete_behavior",
                    "Braze deletes users by external_id",
                    "match on external_id to delete",
                )
            )
        return problems

    def _object(self, batch: Batch, record: Record) -> tuple[str, dict[str, Any]]:
        ident = {batch.match_field or "external_id": record.match_value}
        if (batch.object or "").startswith(SUBSCRIPTION_PREFIX):
            # Subscription state rides on the attributes object (Braze's /users/track docs).
            group_id = (batch.object or "")[len(SUBSCRIPTION_PREFIX) :]
            state = record.fields.get(SUBSCRIPTION_STATE)
            return "attributes", {
                **ident,
                "subscription_groups": [
                    {"subscription_group_id": group_id, "subscription_state": state}
                ],
            }
        if batch.mode != "events":
            obj = {**ident, **record.fields}
            if batch.mode == "update":
                obj["_update_existing_only"] = True
            return "attributes", obj
        # Raises ValueError for a row Braze would refuse: it is rejected alone, not its batch.
        fields = dict(record.fields)
        when = parse_event_time(fields.pop("time")) if "time" in fields else batch.run_time
        stamp = braze_time(when)
        if batch.object == "purchases":
            fixed = {k: fields.pop(k, None) for k in PURCHASE_FIELDS}
            count = fields.pop("quantity", None)
            if count is not None:  # null: Braze's default of 1
                fixed["quantity"] = quantity(count)
            return "purchases", {**ident, **fixed, "time": stamp, "properties": fields}
        return "events", {**ident, "name": batch.object, "time": stamp, "properties": fields}

    def check(self, object_: str | None = None) -> str:
        """Braze has no read endpoint a users.track key may call, and every /users/track call
        that Braze accepts writes: only the REST endpoint's reachability is checked (a GET of
        /users/track, which sends nothing)."""
        url = str(self.config.base_url).rstrip("/") + "/users/track"
        response = probe(self.name, self.config, "GET", url)
        return (
            f"Braze REST endpoint {self.config.base_url} is reachable (HTTP "
            f"{response.status_code}); the API key cannot be checked without writing to a "
            "user, so it is not"
        )

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes:
            self._track(batch, writes, out)
        for i in range(0, len(removes), MAX_DELETE_IDS):
            chunk = removes[i : i + MAX_DELETE_IDS]
            response = self._post(
                "/users/delete", {"external_ids": [str(r.match_value) for r in chunk]}
            )
            if not response.is_success:
                out.rejected.update({r.key: error_text(response) for r in chunk})
        return out

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = self.client.request("POST", path, json=body)
        if response.status_code in (401, 403):
            raise BrazeAuthError(
                f"destination '{self.name}': Braze refused the API key ({error_text(response)})"
            )
        return response

    def _track(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        arrays: dict[str, list[dict[str, Any]]] = {}
        owners: dict[tuple[str, int], Record] = {}
        for r in records:
            try:
                name, obj = self._object(batch, r)
            except ValueError as exc:
                out.rejected[r.key] = str(exc)
                continue
            owners[(name, len(arrays.setdefault(name, [])))] = r
            arrays[name].append(obj)
        if not arrays:
            return
        response = self._post("/users/track", arrays)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.is_success:
            out.rejected.update({r.key: error_text(response) for r in owners.values()})
            return
        for err in body.get("errors", []) if isinstance(body, dict) else []:
            owner = owners.get((str(err.get("input_array")), int(err.get("index", -1))))
            if owner is not None:
                out.rejected[owner.key] = str(err.get("type") or err)

    def close(self) -> None:
        self.client.close()
