"""Google Ads API destination, two objects:

- `click_conversions` (mode events): offline click conversions through
  `customers/{id}:uploadClickConversions` with `partialFailure: true`, at most 2,000 a request;
  each failed conversion is found by its index in `partialFailureError` and only that row is
  rejected, with Google's code and message. Enhanced conversions: hashed email and phone ride
  along as `userIdentifiers` (Google takes address identifiers only for Customer Match, store
  sales and conversion adjustments, not for click conversion uploads).
- `customer_match:<user_list_id>` (modes upsert, mirror): members of a Customer Match list
  through offline user data jobs (create, addOperations with partial failure, run). After the
  load, the list's own `match_rate_percentage` is the run's match rate.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any, ClassVar

from retl_dagster.common.encoding import parse_event_time
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
from retl_dagster.destinations.hashing import stable_event_id
from retl_dagster.destinations.impl.google_ads import normalize
from retl_dagster.destinations.impl.google_ads.api import GoogleAdsApi, describe, parse_errors
from retl_dagster.destinations.impl.google_ads.config import (
    MAX_CONVERSIONS,
    MAX_RECORDS,
    GoogleAdsConfig,
)
from retl_dagster.destinations.impl.google_ads.exceptions import (
    GoogleAdsCheckError,
    InvalidValue,
    MissingConversionAction,
)

CLICK_CONVERSIONS = "click_conversions"
CUSTOMER_MATCH = "customer_match:"
CLICK_IDS = ("gclid", "gbraid", "wbraid")
CONVERSION_FIELDS = (
    *CLICK_IDS,
    "conversion_action",
    "conversion_date_time",
    "conversion_value",
    "currency_code",
    "order_id",
    "email",
    "phone",
)
"""Mappable on click_conversions: no address parts (Google refuses addressInfo there)."""
ALREADY_THERE = "conversionUploadError.CLICK_CONVERSION_ALREADY_EXISTS"
"""Google already has this conversion (same click, action and time): a resend of one it
acknowledged before, so it counts as delivered, not as rejected."""


def order_id(sync: str, key: str) -> str:
    """Stable per row, so Google recognises a resent conversion by its order id."""
    return stable_event_id(sync, key)


def _naive(value: Any) -> bool:
    """Whether a timestamp carries no offset (an epoch number is an instant: never naive)."""
    if isinstance(value, dt.datetime):
        return value.tzinfo is None
    if isinstance(value, dt.date):
        return True
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip()).tzinfo is None
        except ValueError:
            return False
    return False


def conversion_date_time(value: Any, zone: str) -> str:
    """`yyyy-mm-dd hh:mm:ss+|-hh:mm` from a timestamp; one without an offset is in `zone`."""
    if value is None or value == "":
        raise InvalidValue(
            "conversion_date_time is empty: Google needs when the conversion happened"
        )
    try:
        parsed = parse_event_time(value)
    except ValueError as exc:
        raise InvalidValue(f"conversion_date_time: {exc}") from None
    if _naive(value):  # the account's zone, not UTC (parse_event_time's default for naive)
        parsed = parsed.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    offset = parsed.utcoffset() or dt.timedelta(0)
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return parsed.strftime("%Y-%m-%d %H:%M:%S") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class GoogleAdsDestination(Destination[GoogleAdsConfig]):
    type: ClassVar[str] = "google_ads"
    config_class = GoogleAdsConfig
    modes = frozenset({"events", "upsert", "mirror"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_RECORDS
    # Google Ads refuses a job on a Customer Match list while another modifies it
    # (CONCURRENT_MODIFICATION), so one sync at a time unless `pool_limit` says otherwise.
    pool_limit = 1
    requires_object = True
    reports_match = True
    event_time_field = "conversion_date_time"

    def __init__(self, name: str, config: GoogleAdsConfig) -> None:
        super().__init__(name, config)
        self.api = GoogleAdsApi(name, config)
        self.cid = self.api.customer_id
        self.object: str | None = None

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        object_ = sync.object or ""
        allowed: tuple[str, ...]
        modes: tuple[str, ...]
        if object_ == CLICK_CONVERSIONS:
            allowed, modes = CONVERSION_FIELDS, ("events",)
        elif object_.startswith(CUSTOMER_MATCH) and object_[len(CUSTOMER_MATCH) :].isdigit():
            allowed, modes = normalize.IDENTIFIER_FIELDS, ("upsert", "mirror")
        else:
            return [
                (
                    "object",
                    f"google_ads has no object '{object_}'",
                    "use click_conversions, or customer_match:<user list id>",
                )
            ]
        problems: list[Problem] = []
        if object_ == CLICK_CONVERSIONS:
            for i, f in enumerate(sync.fields, start=1):
                if f in normalize.ADDRESS_FIELDS:
                    problems.append(
                        (
                            f"mappings[{i}].to",
                            f"click conversions take no address identifiers ({f}): Google "
                            "accepts addresses only for Customer Match, store sales and "
                            "conversion adjustments",
                            "map email or phone instead, or remove this mapping",
                        )
                    )
            allowed = (*allowed, *normalize.ADDRESS_FIELDS)  # said above, not twice
        problems += cls.unknown_properties(sync, allowed)
        if sync.mode not in modes:
            problems.append(
                ("mode", f"{object_} takes mode {' or '.join(modes)}", f"use mode {modes[0]}")
            )
        if object_ == CLICK_CONVERSIONS and "conversion_date_time" not in sync.fields:
            problems.append(
                (
                    "mappings",
                    "a click conversion needs the time it happened",
                    "map a timestamp column to conversion_date_time",
                )
            )
        if object_ != CLICK_CONVERSIONS and not {"email", "phone", "first_name"} & set(sync.fields):
            problems.append(
                (
                    "mappings",
                    "Customer Match needs a user identifier",
                    "map email, phone, or first_name + last_name + country_code + postal_code",
                )
            )
        return problems

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        self.object = object_
        if (
            object_ == CLICK_CONVERSIONS
            and not self.config.conversion_action
            and "conversion_action" not in field_types
        ):
            raise MissingConversionAction(
                f"destination '{self.name}': click conversions need a conversion action. Fix: "
                "set conversion_action on the destination, or map a column to conversion_action"
            )

    def check(self, object_: str | None = None) -> str:
        """A token from the refresh token, then `googleAds:search` of the customer itself: the
        OAuth client, refresh token, developer token and access to the account all hold (and, for
        a Customer Match object, the user list exists)."""
        response = self.api.post(
            f"customers/{self.cid}/googleAds:search",
            {"query": "SELECT customer.id FROM customer LIMIT 1"},
        )
        if not response.is_success:
            raise GoogleAdsCheckError(
                f"destination '{self.name}': reading customer {self.cid} failed: "
                f"{describe(response)}. Fix: check customer_id (and login_customer_id when "
                "access comes from a manager account)"
            )
        said = f"Google Ads credentials accepted; customer {self.cid} readable"
        if object_ and object_.startswith(CUSTOMER_MATCH):
            list_id = object_[len(CUSTOMER_MATCH) :]
            found = self.api.post(
                f"customers/{self.cid}/googleAds:search",
                {"query": f"SELECT user_list.id FROM user_list WHERE user_list.id = {list_id}"},
            )
            if not found.is_success or not found.json().get("results"):
                raise GoogleAdsCheckError(
                    f"destination '{self.name}': customer {self.cid} has no user list "
                    f"{list_id}. Fix: set the sync's object to customer_match:<the list's id> "
                    "(Tools > Audience manager)"
                )
            said += f"; user list {list_id} exists"
        return said

    def deliver(self, batch: Batch) -> BatchResult:
        if batch.object == CLICK_CONVERSIONS:
            return self._conversions(batch)
        return self._customer_match(batch)

    @staticmethod
    def _left_out(record: Record, notes: list[str], out: BatchResult) -> None:
        """Say which identifiers a record that still goes was sent without, and why."""
        if notes:
            out.warnings[record.key] = "; ".join(notes)

    # -- click conversions --------------------------------------------------------------------
    def _action(self, value: Any) -> str:
        action = str(value or self.config.conversion_action or "")
        if action.isdigit():
            return f"customers/{self.cid}/conversionActions/{action}"
        return action

    def _consent(self) -> dict[str, str]:
        consent: dict[str, str] = {}
        if self.config.ad_user_data_consent:
            consent["adUserData"] = self.config.ad_user_data_consent
        if self.config.ad_personalization_consent:
            consent["adPersonalization"] = self.config.ad_personalization_consent
        return consent

    def _conversion(self, batch: Batch, record: Record, notes: list[str]) -> dict[str, Any]:
        f = record.fields
        conversion: dict[str, Any] = {
            "conversionAction": self._action(f.get("conversion_action")),
            "conversionDateTime": conversion_date_time(
                f.get("conversion_date_time"), self.config.conversion_time_zone
            ),
            "orderId": str(f.get("order_id") or order_id(batch.sync, record.key)),
        }
        # Google takes one click id per conversion; the most precise one wins.
        click = next(((k, f[k]) for k in CLICK_IDS if f.get(k)), None)
        if click:
            conversion[click[0]] = str(click[1])
        if f.get("conversion_value") is not None:
            conversion["conversionValue"] = float(f["conversion_value"])
        currency = f.get("currency_code") or self.config.currency_code
        if currency:
            conversion["currencyCode"] = str(currency)
        identifiers = normalize.identifiers(
            f, self.config.default_phone_country_code, notes, address=False
        )
        if identifiers:
            conversion["userIdentifiers"] = identifiers
        if not click and not identifiers:
            raise InvalidValue(
                "; ".join(
                    [
                        "no gclid, gbraid, wbraid or user identifier (email, phone): Google "
                        "cannot attribute this conversion",
                        *notes,
                    ]
                )
            )
        if consent := self._consent():
            conversion["consent"] = consent
        return conversion

    def _conversions(self, batch: Batch) -> BatchResult:
        out = BatchResult(identified=0)
        items = build_items(
            batch.records, out, lambda r, notes: self._conversion(batch, r, notes), InvalidValue
        )
        for i in range(0, len(items), MAX_CONVERSIONS):
            self._upload(items[i : i + MAX_CONVERSIONS], out)
        # Every conversion sent carries a click id or an identifier, or it was not sent.
        out.identified = sum(1 for r, _ in items if r.key not in out.rejected)
        return out

    def _upload(self, items: list[tuple[Record, dict[str, Any]]], out: BatchResult) -> None:
        response = self.api.post(
            f"customers/{self.cid}:uploadClickConversions",
            {"conversions": [c for _, c in items], "partialFailure": True},
        )
        if not response.is_success:
            reason = describe(response)
            for record, _ in items:
                out.rejected[record.key] = reason
            return
        body = response.json()
        failed: dict[int, list[str]] = {}
        for error in parse_errors(body.get("partialFailureError")):
            index = error.index("conversions")
            if index is not None and error.code != ALREADY_THERE:
                failed.setdefault(index, []).append(str(error))
            elif index is not None:
                failed.setdefault(index, [])  # acknowledged earlier: not rejected
        results = body.get("results") or []
        for index, (record, _) in enumerate(items):
            if failed.get(index):
                out.rejected[record.key] = "; ".join(failed[index])
            elif index not in failed and not (index < len(results) and results[index]):
                # Never mark synced what Google neither confirmed nor refused.
                out.rejected[record.key] = "Google's answer did not confirm this conversion"

    # -- Customer Match -----------------------------------------------------------------------
    # One job per batch, run before deliver() returns. The engine marks a batch's records
    # synced as soon as deliver() returns, and Google drops a job that is never run: with one
    # job per run, a run that died after its first batches would leave records marked synced
    # whose operations were never applied. Per batch, a record is acknowledged only once its
    # operation was accepted (addOperations) AND its job was started (run); what Google then
    # does asynchronously is the list's own business (its match rate shows the outcome).
    # Google prefers few large jobs, hence batches of 10,000 by default (up to 100,000).
    def _user_list(self, batch: Batch) -> str:
        list_id = (batch.object or "")[len(CUSTOMER_MATCH) :]
        return f"customers/{self.cid}/userLists/{list_id}"

    @staticmethod
    def _previous(record: Record) -> list[normalize.Identifier]:
        """The identifiers this record was last uploaded with (kept as its destination id)."""
        if not record.dest_id:
            return []
        try:
            previous = json.loads(record.dest_id)
        except ValueError:
            return []
        return previous if isinstance(previous, list) else []

    def _customer_match(self, batch: Batch) -> BatchResult:
        out = BatchResult(identified=0)
        creates: list[tuple[Record, list[normalize.Identifier]]] = []
        removes: list[tuple[Record, list[normalize.Identifier]]] = []
        for record in batch.records:
            previous = self._previous(record)
            if record.op == "removed":
                if previous:
                    removes.append((record, previous))
                else:
                    out.rejected[record.key] = (
                        "the identifiers this member was uploaded with are unknown (no "
                        "destination id in state), so it cannot be removed from the list"
                    )
                continue
            notes: list[str] = []
            current = normalize.identifiers(
                record.fields, self.config.default_phone_country_code, notes
            )
            if not current:
                out.rejected[record.key] = "; ".join(
                    [
                        "no user identifier: Customer Match needs an email, a phone number, or "
                        "first_name + last_name + country_code + postal_code",
                        *notes,
                    ]
                )
                continue
            self._left_out(record, notes, out)
            now = {normalize.canonical(i) for i in current}
            stale = [i for i in previous if normalize.canonical(i) not in now]
            if stale:  # an email or phone that changed: the old one leaves the list
                removes.append((record, stale))
            creates.append((record, current))
        # Removals and additions go in two jobs (Google refuses a job that mixes them,
        # CONFLICTING_OPERATION) whose processing order Google does not promise: an identifier
        # this batch adds is therefore never also removed by it.
        adding = {normalize.canonical(i) for _, ids in creates for i in ids}
        removes = [
            (r, kept)
            for r, ids in removes
            if (kept := [i for i in ids if normalize.canonical(i) not in adding])
        ]
        self._job(batch, "remove", removes, out)
        self._job(batch, "create", creates, out)
        for record, ids in creates:
            if record.key not in out.rejected:
                out.dest_ids[record.key] = json.dumps(ids, sort_keys=True, separators=(",", ":"))
                out.identified = (out.identified or 0) + 1
        return out

    def _job(
        self,
        batch: Batch,
        kind: str,
        items: list[tuple[Record, list[normalize.Identifier]]],
        out: BatchResult,
    ) -> None:
        """Create an offline user data job, add one `kind` operation per record, run it."""
        items = [(r, ids) for r, ids in items if r.key not in out.rejected]
        if not items:
            return
        metadata: dict[str, Any] = {"userList": self._user_list(batch)}
        if (consent := self._consent()) and kind == "create":
            metadata["consent"] = consent
        response = self.api.post(
            f"customers/{self.cid}/offlineUserDataJobs:create",
            {
                "job": {
                    "type": "CUSTOMER_MATCH_USER_LIST",
                    "customerMatchUserListMetadata": metadata,
                }
            },
        )
        if not response.is_success:
            reason = describe(response)
            for record, _ in items:
                out.rejected[record.key] = reason
            return
        job = response.json()["resourceName"]
        start = 0
        while start < len(items):
            end, count = start, 0
            while end < len(items) and (
                end == start or count + len(items[end][1]) <= self.config.identifiers_per_request
            ):
                count += len(items[end][1])
                end += 1
            self._add(job, kind, items[start:end], out)
            start = end
        accepted = [r for r, _ in items if r.key not in out.rejected]
        if not accepted:
            return  # nothing to apply: Google discards a job that is never run
        response = self.api.post(f"{job}:run", {})
        if not response.is_success:
            reason = describe(response)
            for record in accepted:
                out.rejected[record.key] = reason

    def _add(
        self,
        job: str,
        kind: str,
        chunk: list[tuple[Record, list[normalize.Identifier]]],
        out: BatchResult,
    ) -> None:
        response = self.api.post(
            f"{job}:addOperations",
            {
                "operations": [{kind: {"userIdentifiers": ids}} for _, ids in chunk],
                "enablePartialFailure": True,
            },
        )
        if not response.is_success:
            reason = describe(response)
            for record, _ in chunk:
                out.rejected[record.key] = reason
            return
        for error in parse_errors(response.json().get("partialFailureError")):
            index = error.index("operations")
            if index is not None and index < len(chunk):
                key = chunk[index][0].key
                out.rejected[key] = "; ".join(filter(None, [out.rejected.get(key), str(error)]))

    def match_rate(self) -> float | None:
        """The list's match_rate_percentage (0-100) as 0-1; None until Google computes one."""
        if not (self.object or "").startswith(CUSTOMER_MATCH):
            return None
        list_id = self.object[len(CUSTOMER_MATCH) :]  # type: ignore[index]
        try:
            response = self.api.post(
                f"customers/{self.cid}/googleAds:search",
                {
                    "query": "SELECT user_list.id, user_list.match_rate_percentage, "
                    "user_list.size_for_search FROM user_list "
                    f"WHERE user_list.id = {int(list_id)}"
                },
            )
            rows = response.json().get("results") or [] if response.is_success else []
        except (DestinationError, ValueError):
            # Everything is delivered by now; a missing rate must not fail the run.
            return None
        rate = rows[0].get("userList", {}).get("matchRatePercentage") if rows else None
        return None if rate is None else float(rate) / 100

    def close(self) -> None:
        self.api.close()
