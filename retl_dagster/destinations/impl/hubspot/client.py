from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pyrate_limiter import Duration, Rate

from retl_dagster.common.encoding import parse_event_time
from retl_dagster.destinations.base import (
    NESTED_KINDS,
    Batch,
    BatchResult,
    Destination,
    DestinationConfigError,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.hubspot.config import HubSpotConfig
from retl_dagster.destinations.impl.hubspot.exceptions import HubSpotAuthError, HubSpotCheckError

# Private apps: 100 requests per 10 s (HubSpot's documented default burst limit), as a window:
# a burst of 100 is allowed, which 10 a second would not.
API_WINDOW = Rate(100, 10 * Duration.SECOND)
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
# Warehouse types whose values are objects or arrays (built objects and arrays are JSON).
_NESTED_TYPE = re.compile(r"^(STRUCT|MAP|UNION|LIST|JSON)\b|\[\d*\]$|^ARRAY\b", re.IGNORECASE)


def _decimal_text(value: int | float | Decimal) -> str:
    """A number as plain decimal text: HubSpot number properties take no exponent."""
    return format(Decimal(repr(value)) if isinstance(value, float) else Decimal(value), "f")


def _epoch_ms(moment: dt.datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def property_value(value: Any, temporal: str | None = None) -> str:
    """A JSON-ready value as the string HubSpot's API types every property value as.

    HubSpot documents timestamps as Unix milliseconds: a `date` property at midnight UTC of its
    day, a `datetime` property at any millisecond (naive warehouse timestamps are UTC). Null
    becomes "", which clears the property (HubSpot refuses null).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return _decimal_text(value)
    if isinstance(value, (dict, list)):
        # check_nested_mappings refuses such mappings before a run sends anything.
        raise TypeError("HubSpot properties take no objects or arrays")
    text = str(value)
    if temporal == "date" and text:
        day = dt.date.fromisoformat(text[:10])
        return _epoch_ms(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    if temporal == "datetime" and text:
        return _epoch_ms(parse_event_time(text))
    return text


def temporal_kind(warehouse_type: str) -> str | None:
    """`date` or `datetime` for a warehouse DATE or TIMESTAMP column, else None."""
    upper = warehouse_type.upper()
    if upper.startswith("TIMESTAMP") or upper.startswith("DATETIME"):
        return "datetime"
    if upper == "DATE":
        return "date"
    return None


def nested_mapping_problems(field_types: dict[str, str]) -> list[tuple[str, str, str]]:
    """(field, problem, fix) for each mapped field whose values are objects or arrays: HubSpot
    types every property value as a string, and refuses an object."""
    return [
        (
            f"mappings[{i}]",
            f"'{to}' would receive {ty} values (an object or array), but every HubSpot "
            "property value is a string",
            "map a scalar column, or cast the value to text in the model "
            f"(e.g. `cast(<column> as VARCHAR) as {to}`) and map that column with `from:`",
        )
        for i, (to, ty) in enumerate(field_types.items(), start=1)
        if _NESTED_TYPE.search(ty.strip())
    ]


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return error_text(response)
    return f"{body.get('category', response.status_code)}: {body.get('message', '')}".strip()


class HubSpotDestination(Destination[HubSpotConfig]):
    type: ClassVar[str] = "hubspot"
    config_class = HubSpotConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = 100
    requires_object = True
    requires_match = frozenset({"update", "upsert", "mirror"})
    reads_current_values = True  # batch/read by the match property

    def __init__(self, name: str, config: HubSpotConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            base_url=str(config.base_url).rstrip("/"),
            headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
            api_window=API_WINDOW,
        )
        self.temporal: dict[str, str] = {}
        """Field -> `date` / `datetime`, from the warehouse types `prepare` is given."""

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        """At `retl validate` and load time: an object or array mapping can never be a HubSpot
        property value (a STRUCT or JSON column mapped with `from:` is caught in `prepare`,
        once the warehouse types are known)."""
        return [
            (
                f"mappings[{i + 1}]",
                f"'{to}' would receive an object or array, but every HubSpot property value "
                "is a string",
                "map a scalar column, or build the text in the model and map it with `from:`",
            )
            for i, to in enumerate(sync.fields)
            if sync.kind(i) in NESTED_KINDS
        ]

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        """Before anything is sent: refuse object and array mappings, and note the date and
        timestamp fields (sent as HubSpot's millisecond timestamps)."""
        problems = nested_mapping_problems(field_types)
        if problems:
            field, problem, fix = problems[0]
            raise DestinationConfigError(self.name, field, problem, fix)
        self.temporal = {
            f: kind for f, ty in field_types.items() if (kind := temporal_kind(ty)) is not None
        }

    # -- requests ---------------------------------------------------------------------------
    def _post(self, object_: str, action: str, body: dict[str, Any]) -> httpx.Response:
        response = self.client.request(
            "POST", f"/crm/v3/objects/{object_}/batch/{action}", json=body
        )
        if response.status_code in (401, 403):
            raise HubSpotAuthError(
                f"destination '{self.name}': {_message(response)}. Fix: check "
                "the private app token and its scopes"
            )
        return response

    def _properties(self, record: Record) -> dict[str, str]:
        return {k: property_value(v, self.temporal.get(k)) for k, v in record.fields.items()}

    @staticmethod
    def _id(value: Any) -> str:
        """HubSpot types ids as strings (a numeric match column included)."""
        return property_value(value)

    def _input(self, mode: str, record: Record, match_field: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "properties": self._properties(record),
            "objectWriteTraceId": record.key,
        }
        if mode == "update" and record.dest_id:
            item["id"] = record.dest_id
        elif mode in ("update", "upsert", "mirror"):
            item["id"] = self._id(record.match_value)
            item["idProperty"] = match_field
        return item

    def remote_properties(self, object_: str) -> list[str] | None:
        response = self.client.request("GET", f"/crm/v3/properties/{object_}")
        if response.status_code in (401, 403):
            raise HubSpotAuthError(f"destination '{self.name}': {_message(response)}")
        if not response.is_success:
            return None
        return [p["name"] for p in response.json().get("results", [])]

    def check(self, object_: str | None = None) -> str:
        """`GET /crm/v3/objects/<object>?limit=1` (contacts when no sync names one): the token is
        accepted and has read access to the object."""
        obj = object_ or "contacts"
        response = self.client.request("GET", f"/crm/v3/objects/{obj}", params={"limit": 1})
        if response.status_code in (401, 403):
            raise HubSpotAuthError(
                f"destination '{self.name}': HubSpot refused the token reading {obj} "
                f"({_message(response)}). Fix: check the private app token and give the app the "
                f"crm.objects.{obj}.read and .write scopes"
            )
        if not response.is_success:
            raise HubSpotCheckError(
                f"destination '{self.name}': reading {obj} failed ({_message(response)}). Fix: "
                "check the sync's object (contacts, companies, deals... or a custom object's id)"
            )
        return f"HubSpot token accepted; {obj} readable"

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        assert batch.object
        result = BatchResult()
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes and batch.fill_only and batch.mode != "insert":
            writes = self._without_filled(batch, writes, result)
        if writes:
            action = {"insert": "create", "update": "update"}.get(batch.mode, "upsert")
            self._write(batch, action, writes, result)
        if removes:
            self._archive(batch, removes, result)
        return result

    def _without_filled(
        self, batch: Batch, records: list[Record], out: BatchResult
    ) -> list[Record]:
        """`overwrite: false`: read the records' current values (one batch/read by the match
        property) and leave out each fill-only field that already has a value in HubSpot. A
        record HubSpot does not have yet gets every field."""
        assert batch.object and batch.match_field
        fill = sorted(batch.fill_only)
        response = self._post(
            batch.object,
            "read",
            {
                "idProperty": batch.match_field,
                "properties": [batch.match_field, *fill],
                "propertiesWithHistory": [],
                "inputs": [{"id": self._id(r.match_value)} for r in records],
            },
        )
        if response.status_code not in (200, 207):
            # Without the current values a fill-only field could clobber a typed one.
            for r in records:
                out.rejected[r.key] = f"reading current values failed: {_message(response)}"
            return []
        current = {
            str(res["properties"].get(batch.match_field)): res["properties"]
            for res in response.json().get("results", [])
        }
        kept = []
        for r in records:
            have = current.get(self._id(r.match_value), {})
            filled = {f for f in fill if have.get(f) not in (None, "")}
            kept.append(
                dataclasses.replace(
                    r, fields={k: v for k, v in r.fields.items() if k not in filled}
                )
                if filled
                else r
            )
        return kept

    def _write(self, batch: Batch, action: str, records: list[Record], out: BatchResult) -> None:
        sendable: list[tuple[Record, dict[str, Any]]] = []
        for r in records:
            try:
                sendable.append((r, self._input(batch.mode, r, batch.match_field)))
            except (TypeError, ValueError) as exc:  # e.g. a DATE column holding no date
                out.rejected[r.key] = f"not sent: {exc}"
        if not sendable:
            return

        def send(chunk: Sequence[tuple[Record, dict[str, Any]]]) -> str | None:
            return self._send(batch, action, chunk, out)

        def reject(item: tuple[Record, dict[str, Any]], reason: str) -> None:
            out.rejected[item[0].key] = reason

        # One bad value fails HubSpot's whole batch (400, or 409 for an existing record):
        # halved until it is isolated.
        send_isolating(sendable, send, reject, self.request_budget())

    def _send(
        self,
        batch: Batch,
        action: str,
        chunk: Sequence[tuple[Record, dict[str, Any]]],
        out: BatchResult,
    ) -> str | None:
        """One batch request; HubSpot's reason when it refused the request whole (400/409)."""
        assert batch.object
        records = [r for r, _ in chunk]
        inputs = [i for _, i in chunk]
        response = self._post(batch.object, action, {"inputs": inputs})
        if response.status_code in (400, 409):
            existing = _EXISTING_ID.search(response.text)
            if len(chunk) == 1 and response.status_code == 409 and action == "create" and existing:
                out.dest_ids[records[0].key] = existing.group(1)  # insert leaves it as it is
                return None
            return _message(response)
        if not response.is_success:
            for r in records:
                out.rejected[r.key] = _message(response)
            return None
        body = response.json()
        by_input_id = {str(i.get("id")): r for i, r in zip(inputs, records, strict=True)}
        confirmed: set[str] = set()
        for res in body.get("results", []):
            key = res.get("objectWriteTraceId")
            if key is None:  # fall back to the identifier we sent
                prop = batch.match_field or ""
                rec = by_input_id.get(str(res.get("properties", {}).get(prop)))
                key = rec.key if rec else None
            if key is not None:
                confirmed.add(key)
                out.dest_ids[key] = str(res["id"])
        for err in body.get("errors", []):
            message = f"{err.get('category', 'ERROR')}: {err.get('message', '')}"
            for failed_id in (err.get("context") or {}).get("ids", []):
                rec = by_input_id.get(str(failed_id))
                if rec is not None:
                    out.rejected[rec.key] = message
        for r in records:
            if r.key not in confirmed and r.key not in out.rejected:
                # Never mark synced what HubSpot did not confirm.
                out.rejected[r.key] = "HubSpot's answer did not confirm this record"
        return None

    def _archive(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        assert batch.object
        ids = {r.key: r.dest_id for r in records if r.dest_id}
        lookup = [r for r in records if not r.dest_id and r.match_value is not None]
        if lookup and batch.match_field:
            response = self._post(
                batch.object,
                "read",
                {
                    "idProperty": batch.match_field,
                    "properties": [batch.match_field],
                    # Required by HubSpot's BatchReadInputSimplePublicObjectId.
                    "propertiesWithHistory": [],
                    "inputs": [{"id": self._id(r.match_value)} for r in lookup],
                },
            )
            found = (
                {
                    str(res["properties"].get(batch.match_field)): str(res["id"])
                    for res in response.json().get("results", [])
                }
                if response.content
                else {}
            )
            for r in lookup:
                if self._id(r.match_value) in found:
                    ids[r.key] = found[self._id(r.match_value)]
        if ids:
            response = self._post(
                batch.object, "archive", {"inputs": [{"id": i} for i in ids.values()]}
            )
            if not response.is_success:
                for key in ids:
                    out.rejected[key] = _message(response)
        # Records HubSpot no longer has are already deleted: nothing to do.

    def close(self) -> None:
        self.client.close()
