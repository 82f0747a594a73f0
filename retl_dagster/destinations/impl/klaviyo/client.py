"""Klaviyo's REST API (revision `REVISION`, `Authorization: Klaviyo-API-Key <private key>`).

Objects, as Hightouch's Klaviyo destination splits them:
- `profiles` (mode upsert): a Bulk Import Profiles job (`POST /api/profile-bulk-import-jobs`, at
  most 10,000 profiles and 5 MB), polled (`GET .../{id}`) until `complete`; the profiles Klaviyo
  refused are read from `GET .../{id}/import-errors` and rejected with its `detail`. Klaviyo's
  standard attributes (`first_name`, `title`...) go to the profile's attributes, every other field
  to `attributes.properties`. Klaviyo's import cannot clear a field with null, so nulls are left
  out. Profiles are never deleted (that is a data-privacy request in Klaviyo).
- `list:<list id>` (mode upsert): the same import job with `relationships.lists`, which also adds
  the profiles to the list; `delete_behavior: delete` removes a removed row's profile from the list
  (`DELETE /api/lists/{id}/relationships/profiles`, 1,000 ids a call, the ids looked up with
  `GET /api/profiles?filter=any(<field>,[...])`), never the profile itself.
- any other object (mode events): the metric name of a Bulk Create Events job (`POST
  /api/event-bulk-create-jobs`, at most 1,000 events), one entry per row with the row's profile
  identifier, `time` (the mapped event time, else the run's start), `value` and `value_currency`
  where mapped, `unique_id` stable per row (Klaviyo drops a resent event with the same one) and
  the other fields as `properties`.

Errors: a 400 carries JSON:API `errors[]` (`code`, `title`, `detail`, `source.pointer`); a request
refused whole is halved until the refused rows are alone (bisect.send_isolating). 401/403 fail the
run. Every endpoint used documents a 10/s burst and 150/m steady limit: the steady one is the
destination's shared budget; a 429 waits for `Retry-After`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import httpx
from pyrate_limiter import Duration, Rate

from retl_dagster.common.encoding import parse_event_time
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import RequestBudget, send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.klaviyo.config import (
    MAX_CONCURRENCY,
    MAX_EVENTS_PER_JOB,
    MAX_LIST_MEMBERS,
    MAX_PROFILES_PER_JOB,
    KlaviyoConfig,
)
from retl_dagster.destinations.impl.klaviyo.exceptions import KlaviyoAuthError, KlaviyoJobError
from retl_dagster.destinations.phones import PhoneError, e164

REVISION = "2026-10-15"
"""The API revision sent on every request: the one the contract tests' `klaviyo-api` SDK models."""
STEADY_LIMIT = Rate(150, Duration.MINUTE)
"""Klaviyo's steady limit of the bulk import, bulk events and list-membership endpoints."""
MAX_JOB_BYTES = 4_500_000
"""A job's body stays under Klaviyo's 5 MB, with room for the envelope."""
MAX_LOOKUP = 100
"""Profiles one `GET /api/profiles` page returns (its `page[size]` maximum)."""
IDENTIFIERS = ("email", "phone_number", "external_id")
STANDARD_ATTRIBUTES = frozenset(
    {*IDENTIFIERS, "first_name", "last_name", "organization", "locale", "title", "image"}
)
"""A profile's own attributes (Klaviyo's profile object); other fields are custom properties."""
EVENT_FIELDS = ("value", "value_currency", "unique_id")
"""An event's own attributes besides `time`; other fields are its `properties`."""
LIST_PREFIX = "list:"
MAX_METRIC_NAME = 127
"""A metric name must be less than 128 characters."""
_POINTER_INDEX = re.compile(r"/profiles/data/(\d+)")


def unique_id(sync: str, record: Record) -> str:
    """Stable per row and content: a resend (retry, crash, replay) carries the same id."""
    raw = json.dumps([sync, record.key, record.fields], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def klaviyo_errors(response: httpx.Response) -> str:
    """Klaviyo's JSON:API `errors[]` as one line (`detail (pointer)`), else the raw answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return error_text(response)
    parts = []
    for err in errors:
        if not isinstance(err, dict):
            continue
        text = str(err.get("detail") or err.get("title") or err.get("code"))
        pointer = (err.get("source") or {}).get("pointer")
        parts.append(f"{text} ({pointer})" if pointer else text)
    return f"HTTP {response.status_code}: " + "; ".join(parts)


def _list_id(object_: str | None) -> str | None:
    if object_ and object_.startswith(LIST_PREFIX):
        return object_[len(LIST_PREFIX) :] or None
    return None


class KlaviyoDestination(Destination[KlaviyoConfig]):
    type: ClassVar[str] = "klaviyo"
    config_class = KlaviyoConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "events"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_PROFILES_PER_JOB
    accepts_nulls = False  # Bulk Import Profiles cannot clear a field with null
    requires_object = True
    requires_match = frozenset({"upsert", "events"})
    event_time_field = "time"

    def __init__(self, name: str, config: KlaviyoConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            refused=lambda response: KlaviyoAuthError(
                f"destination '{name}': Klaviyo refused the private API key "
                f"({klaviyo_errors(response)}). Fix: set a private key (pk_...) with the scopes "
                "profiles:write, lists:write and events:write"
            ),
            base_url=str(config.base_url).rstrip("/"),
            headers={
                "Authorization": f"Klaviyo-API-Key {config.private_key.get_secret_value()}",
                "revision": REVISION,
                "Accept": "application/vnd.api+json",
            },
            api_window=STEADY_LIMIT,
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        mode, object_ = sync.mode, sync.object or ""
        problems: list[Problem] = []
        if sync.match_field is not None and sync.match_field not in IDENTIFIERS:
            problems.append(
                (
                    "match.field",
                    f"Klaviyo identifies profiles by {', '.join(IDENTIFIERS)}",
                    "match on one of those",
                )
            )
        profile_object = object_ == "profiles" or object_.startswith(LIST_PREFIX)
        if object_.startswith(LIST_PREFIX) and _list_id(object_) is None:
            problems.append(("object", "no list id after 'list:'", "use object: list:<list id>"))
        if mode == "upsert" and object_ and not profile_object:
            problems.append(
                (
                    "object",
                    f"mode upsert writes profiles, and '{object_}' is not a Klaviyo object",
                    "use object: profiles or list:<list id>, or mode: events with a metric name",
                )
            )
        if mode == "events" and profile_object:
            problems.append(
                (
                    "object",
                    f"in mode events the object is the metric's name, not '{object_}'",
                    "set object to the event's metric name (e.g. Placed Order), or use mode upsert",
                )
            )
        if mode == "events" and len(object_) > MAX_METRIC_NAME:
            problems.append(("object", "a metric name must be under 128 characters", "shorten it"))
        if sync.delete_behavior == "delete" and not object_.startswith(LIST_PREFIX):
            problems.append(
                (
                    "delete_behavior",
                    "this destination never deletes Klaviyo profiles (that is a data-privacy "
                    "request); it removes them from a list",
                    "use object: list:<list id> to remove rows from a list, or delete_behavior: "
                    "nothing",
                )
            )
        return problems

    # -- requests -------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.request(
            "POST", path, json=body, headers={"Content-Type": "application/vnd.api+json"}
        )

    def check(self, object_: str | None = None) -> str:
        """`GET /api/accounts`: the key's account (read-only, any private key may call it)."""
        response = self.client.request("GET", "/api/accounts")
        if not response.is_success:
            raise KlaviyoJobError(
                f"destination '{self.name}': GET /api/accounts answered "
                f"{klaviyo_errors(response)}. Fix: check base_url and the private key"
            )
        data = response.json().get("data") or [{}]
        account = data[0].get("id", "?")
        found = f"Klaviyo account {account} accepts the private key"
        list_id = _list_id(object_)
        if list_id is not None:
            got = self.client.request("GET", f"/api/lists/{list_id}")
            if got.status_code == 404:
                raise KlaviyoJobError(
                    f"destination '{self.name}': Klaviyo has no list '{list_id}'. Fix: use the "
                    "id in the list's URL (Lists & segments) as object: list:<id>"
                )
            if got.is_success:
                found += f"; list {list_id} exists"
        return found

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        budget = self.request_budget()
        if batch.mode == "events":
            self._events(batch, batch.records, out, budget)
            return out
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes:
            self._import(batch, writes, out, budget)
        list_id = _list_id(batch.object)
        if removes and list_id is not None:
            self._remove_from_list(batch, list_id, removes, out)
        return out

    def _profile(self, batch: Batch, record: Record) -> dict[str, Any]:
        """A profile resource object; raises ValueError for a row Klaviyo would refuse."""
        fields = {k: v for k, v in record.fields.items() if v is not None}
        fields[batch.match_field or "email"] = record.match_value
        attributes: dict[str, Any] = {}
        properties: dict[str, Any] = {}
        for key, value in fields.items():
            if key in STANDARD_ATTRIBUTES:
                attributes[key] = str(value)
            else:
                properties[key] = value
        if "phone_number" in attributes:
            try:
                attributes["phone_number"] = e164(attributes["phone_number"])
            except PhoneError as exc:
                raise ValueError(f"phone_number: {exc}") from None
        if properties:
            attributes["properties"] = properties
        return {"type": "profile", "attributes": attributes}

    def _import(
        self, batch: Batch, records: list[Record], out: BatchResult, budget: RequestBudget
    ) -> None:
        items: list[tuple[Record, dict[str, Any]]] = []
        for r in records:
            try:
                items.append((r, self._profile(batch, r)))
            except ValueError as exc:
                out.rejected[r.key] = str(exc)
        list_id = _list_id(batch.object)

        def send(chunk: Sequence[tuple[Record, dict[str, Any]]]) -> str | None:
            job: dict[str, Any] = {
                "type": "profile-bulk-import-job",
                "attributes": {"profiles": {"data": [p for _, p in chunk]}},
            }
            if list_id is not None:
                job["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
            response = self._post("/api/profile-bulk-import-jobs", {"data": job})
            if response.status_code == 400:
                return klaviyo_errors(response)
            if not response.is_success:
                out.rejected.update({r.key: error_text(response) for r, _ in chunk})
                return None
            self._await_job(str(response.json()["data"]["id"]), batch, chunk, out)
            return None

        def reject(item: tuple[Record, dict[str, Any]], reason: str) -> None:
            out.rejected[item[0].key] = reason

        for chunk in _by_size(items, MAX_PROFILES_PER_JOB):
            send_isolating(chunk, send, reject, budget)

    def _await_job(
        self,
        job_id: str,
        batch: Batch,
        chunk: Sequence[tuple[Record, dict[str, Any]]],
        out: BatchResult,
    ) -> None:
        path = f"/api/profile-bulk-import-jobs/{job_id}"
        deadline = time.monotonic() + self.config.job_timeout_s
        while True:
            response = self.client.request("GET", path)
            if not response.is_success:
                raise KlaviyoJobError(
                    f"destination '{self.name}': reading import job {job_id} answered "
                    f"{klaviyo_errors(response)}; the next run sends its profiles again"
                )
            attributes = response.json()["data"]["attributes"]
            status = attributes.get("status")
            if status == "complete":
                break
            if status == "cancelled" or time.monotonic() > deadline:
                raise KlaviyoJobError(
                    f"destination '{self.name}': Klaviyo import job {job_id} is {status} after "
                    f"{self.config.job_timeout_s:.0f} s; its profiles are sent again by the next "
                    "run. Fix: raise job_timeout_s if Klaviyo is slow to import"
                )
            time.sleep(self.config.poll_interval_s)
        if attributes.get("failed_count"):
            self._import_errors(job_id, batch, chunk, out)

    def _import_errors(
        self,
        job_id: str,
        batch: Batch,
        chunk: Sequence[tuple[Record, dict[str, Any]]],
        out: BatchResult,
    ) -> None:
        """Each failed profile's record, rejected with Klaviyo's `detail`: found by the error's
        `source.pointer` (its index in the job), else by its identifier in `original_payload`."""
        field = batch.match_field or "email"
        by_ident = {str(p["attributes"].get(field)): r for r, p in chunk}
        url: str | None = f"/api/profile-bulk-import-jobs/{job_id}/import-errors"
        while url:
            response = self.client.request(
                "GET", url, params={"page[size]": 100} if "?" not in url else None
            )
            if not response.is_success:
                raise KlaviyoJobError(
                    f"destination '{self.name}': reading the errors of import job {job_id} "
                    f"answered {klaviyo_errors(response)}; the next run sends its profiles again"
                )
            body = response.json()
            for err in body.get("data", []):
                attrs = err.get("attributes", {})
                owner: Record | None = None
                pointer = str((attrs.get("source") or {}).get("pointer") or "")
                if (m := _POINTER_INDEX.search(pointer)) is not None and int(m.group(1)) < len(
                    chunk
                ):
                    owner = chunk[int(m.group(1))][0]
                else:
                    payload = attrs.get("original_payload") or {}
                    ident = payload.get(field, (payload.get("attributes") or {}).get(field))
                    owner = by_ident.get(str(ident))
                if owner is not None:
                    out.rejected[owner.key] = str(attrs.get("detail") or attrs.get("title"))
            url = (body.get("links") or {}).get("next")

    def _profile_ids(self, field: str, records: list[Record]) -> dict[str, str]:
        """Klaviyo's profile id of each record (its kept destination id, else looked up by the
        match identifier), by record key; profiles Klaviyo does not have are left out."""
        ids = {r.key: r.dest_id for r in records if r.dest_id}
        missing = [r for r in records if not r.dest_id]
        for i in range(0, len(missing), MAX_LOOKUP):
            part = missing[i : i + MAX_LOOKUP]
            values = ",".join(json.dumps(str(r.match_value)) for r in part)
            response = self.client.request(
                "GET",
                "/api/profiles",
                params={
                    "filter": f"any({field},[{values}])",
                    "page[size]": MAX_LOOKUP,
                    "fields[profile]": field,
                },
            )
            if not response.is_success:
                raise KlaviyoJobError(
                    f"destination '{self.name}': looking up profiles by {field} answered "
                    f"{klaviyo_errors(response)}"
                )
            found = {
                str(p["attributes"].get(field)): str(p["id"])
                for p in response.json().get("data", [])
            }
            ids.update(
                {r.key: found[str(r.match_value)] for r in part if str(r.match_value) in found}
            )
        return ids

    def _remove_from_list(
        self, batch: Batch, list_id: str, records: list[Record], out: BatchResult
    ) -> None:
        ids = self._profile_ids(batch.match_field or "email", records)
        keys = list(ids)
        for i in range(0, len(keys), MAX_LIST_MEMBERS):
            part = keys[i : i + MAX_LIST_MEMBERS]
            body = {"data": [{"type": "profile", "id": ids[k]} for k in part]}
            response = self.client.request(
                "DELETE",
                f"/api/lists/{list_id}/relationships/profiles",
                json=body,
                headers={"Content-Type": "application/vnd.api+json"},
            )
            if not response.is_success:
                out.rejected.update({k: klaviyo_errors(response) for k in part})
        # A removed row whose profile Klaviyo does not have is not on the list: nothing to do.

    def _event(self, batch: Batch, record: Record) -> dict[str, Any]:
        """One bulk-create entry (the row's profile and its event); raises ValueError for a row
        Klaviyo would refuse."""
        fields = {k: v for k, v in record.fields.items() if v is not None}
        when = parse_event_time(fields.pop("time")) if "time" in fields else batch.run_time
        event: dict[str, Any] = {
            "properties": {},
            "time": when.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "metric": {"data": {"type": "metric", "attributes": {"name": batch.object}}},
            "unique_id": str(fields.pop("unique_id", None) or unique_id(batch.sync, record)),
        }
        if "value" in fields:
            value = fields.pop("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"value {value!r} is not a number, as Klaviyo requires"
                    ) from None
            event["value"] = value
        if "value_currency" in fields:
            event["value_currency"] = str(fields.pop("value_currency"))
        event["properties"] = fields
        ident = str(record.match_value)
        if batch.match_field == "phone_number":
            try:
                ident = e164(ident)
            except PhoneError as exc:
                raise ValueError(f"phone_number: {exc}") from None
        profile = {"type": "profile", "attributes": {batch.match_field or "email": ident}}
        return {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": profile},
                "events": {"data": [{"type": "event", "attributes": event}]},
            },
        }

    def _events(
        self, batch: Batch, records: list[Record], out: BatchResult, budget: RequestBudget
    ) -> None:
        items: list[tuple[Record, dict[str, Any]]] = []
        for r in records:
            try:
                items.append((r, self._event(batch, r)))
            except ValueError as exc:
                out.rejected[r.key] = str(exc)

        def send(chunk: Sequence[tuple[Record, dict[str, Any]]]) -> str | None:
            body = {
                "data": {
                    "type": "event-bulk-create-job",
                    "attributes": {"events-bulk-create": {"data": [e for _, e in chunk]}},
                }
            }
            response = self._post("/api/event-bulk-create-jobs", body)
            if response.status_code == 400:
                return klaviyo_errors(response)
            if not response.is_success:
                out.rejected.update({r.key: error_text(response) for r, _ in chunk})
            return None

        def reject(item: tuple[Record, dict[str, Any]], reason: str) -> None:
            out.rejected[item[0].key] = reason

        for chunk in _by_size(items, MAX_EVENTS_PER_JOB):
            send_isolating(chunk, send, reject, budget)

    def close(self) -> None:
        self.client.close()


def _by_size(
    items: list[tuple[Record, dict[str, Any]]],
    most: int,
    size: Callable[[dict[str, Any]], int] = lambda obj: len(json.dumps(obj, default=str)),
) -> list[list[tuple[Record, dict[str, Any]]]]:
    """`items` in chunks of at most `most` whose JSON stays under MAX_JOB_BYTES."""
    chunks: list[list[tuple[Record, dict[str, Any]]]] = []
    current: list[tuple[Record, dict[str, Any]]] = []
    used = 0
    for item in items:
        n = size(item[1]) + 1
        if current and (len(current) >= most or used + n > MAX_JOB_BYTES):
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        chunks.append(current)
    return chunks
