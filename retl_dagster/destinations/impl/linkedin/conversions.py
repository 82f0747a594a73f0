"""LinkedIn Conversions API: warehouse rows as conversion events of a conversion rule (`object:`
its URN, `urn:lla:llaPartnerConversion:<id>`, or its id), streamed through
`POST /conversionEvents` (BATCH_CREATE, at most 5,000 events a request). Each event carries
`conversion` (the rule's URN), `conversionHappenedAt` (epoch milliseconds), an optional
`conversionValue` (`currencyCode`, `amount` as a decimal string), an `eventId` LinkedIn
deduplicates on (stable per row unless mapped), and the `user`: `userIds` (`SHA256_EMAIL`
normalised and hashed here, `LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID`, `ACXIOM_ID`,
`ORACLE_MOAT_ID`) and `userInfo` (first and last name, company, title, country).

An event's time is its mapped `conversion_happened_at`; rows that map none (or hold none) take the
run's start time, the same on every retry and replay. LinkedIn refuses an event that happened more
than 90 days ago; its answer rejects that row alone, with LinkedIn's message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
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
from retl_dagster.destinations.hashing import stable_event_id
from retl_dagster.destinations.impl.linkedin import normalize
from retl_dagster.destinations.impl.linkedin.api import LinkedInApi, body_of, describe
from retl_dagster.destinations.impl.linkedin.audience import ALIASES, unknown_fields
from retl_dagster.destinations.impl.linkedin.config import MAX_ELEMENTS, LinkedInConversionsConfig
from retl_dagster.destinations.impl.linkedin.exceptions import InvalidValue, LinkedInApiError

RULE_URN = "urn:lla:llaPartnerConversion:"
TIME_FIELD = "conversion_happened_at"
ID_FIELDS = {
    "email": "SHA256_EMAIL",
    "li_fat_id": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
    "acxiom_id": "ACXIOM_ID",
    "oracle_moat_id": "ORACLE_MOAT_ID",
}
"""Mappable identifiers -> LinkedIn's idType (`li_fat_id`: the click id LinkedIn's first-party
cookie and ad URLs carry)."""
INFO_FIELDS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "company": "companyName",
    "title": "title",
    "country": "countryCode",
}
"""Mappable member details -> `userInfo`'s key."""
FIELDS = (TIME_FIELD, *ID_FIELDS, *INFO_FIELDS, "value", "currency", "event_id")
CONVERSION_ALIASES = {
    **ALIASES,
    "conversionHappenedAt": TIME_FIELD,
    "event_time": TIME_FIELD,
    "timestamp": TIME_FIELD,
    "eventId": "event_id",
    "amount": "value",
    "currency_code": "currency",
    "currencyCode": "currency",
    "linkedin_uuid": "li_fat_id",
}


def rule_urn(object_: str) -> str:
    return object_ if object_.startswith(RULE_URN) else RULE_URN + object_


def event_id(sync: str, key: str) -> str:
    """Stable per row: a resent or replayed event carries the same id, so LinkedIn keeps one."""
    return stable_event_id(sync, key)


def epoch_ms(value: Any, default: dt.datetime) -> int:
    """`conversionHappenedAt` (epoch milliseconds) from a mapped timestamp; `default` when the
    row has none."""
    try:
        return int(event_time_or(value, default).timestamp() * 1000)
    except ValueError as exc:
        raise InvalidValue(f"{TIME_FIELD}: {exc}") from None


def amount(value: Any) -> str:
    """A decimal string (`12.5`, `73.50`), as LinkedIn's `amount` takes it."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidValue(f"value '{str(value)[:20]}' is not a number") from None
    if not number.is_finite():
        raise InvalidValue(f"value '{value}' is not a finite number")
    return format(number, "f")


class LinkedInConversionsDestination(Destination[LinkedInConversionsConfig]):
    type: ClassVar[str] = "linkedin_conversions"
    config_class = LinkedInConversionsConfig
    modes = frozenset({"events"})
    delete_behaviors = frozenset({"nothing"})
    max_batch_size = MAX_ELEMENTS
    requires_object = True
    reports_match = True
    event_time_field = TIME_FIELD

    def __init__(self, name: str, config: LinkedInConversionsConfig) -> None:
        super().__init__(name, config)
        self.api = LinkedInApi(name, config, "rw_conversions")
        self.client = self.api.client  # `retl test-row` shows its exchanges

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        rule = (sync.object or "").removeprefix(RULE_URN)
        if sync.object and not rule.isdigit():
            problems.append(
                (
                    "object",
                    f"'{sync.object}' is not a conversion rule",
                    f"set object to the rule's URN, {RULE_URN}<id> (or its numeric id: Campaign "
                    "Manager > Analyze > Conversion tracking), a rule of conversion method "
                    "CONVERSIONS_API",
                )
            )
        problems += unknown_fields(cls.type, sync, FIELDS, CONVERSION_ALIASES)
        if not (set(ID_FIELDS) | {"first_name"}) & set(sync.fields):
            problems.append(
                (
                    "mappings",
                    "LinkedIn attributes a conversion to a member by a user id",
                    "map email (normalised and SHA-256 hashed here), li_fat_id, acxiom_id or "
                    "oracle_moat_id (or first_name and last_name)",
                )
            )
        return problems

    @classmethod
    def check_declared(cls, options: Mapping[str, Any], sync: SyncShape) -> list[Problem]:
        if (
            "value" in sync.fields
            and "currency" not in sync.fields
            and not options.get("currency_code")
        ):
            i = sync.fields.index("value") + 1
            return [
                (
                    f"mappings[{i}]",
                    "a conversion value needs its currency",
                    "map a column to currency, or set currency_code on the destination",
                )
            ]
        return []

    def _missing(self, response: httpx.Response) -> Exception:
        return LinkedInApiError(
            f"destination '{self.name}': LinkedIn found no conversion rule to stream to "
            f"({describe(response)}). Fix: set the sync's object to the id of a conversion rule "
            "of method CONVERSIONS_API that the token's member can reach"
        )

    def check(self, object_: str | None = None) -> str:
        """`GET /conversions/{id}?account=...`: the token is accepted and reaches the rule (which
        LinkedIn reads by its ad account: `ad_account_id`)."""
        account = self.config.ad_account_id
        if not object_ or not account:
            return (
                "LinkedIn access token set (set ad_account_id and name a sync's conversion rule "
                "to read it)"
            )
        rule = object_.removeprefix(RULE_URN)
        response = self.api.get(
            f"/conversions/{rule}", params={"account": f"urn:li:sponsoredAccount:{account}"}
        )
        if not response.is_success:
            raise self._missing(response)
        body = body_of(response)
        if body.get("conversionMethod") not in (None, "CONVERSIONS_API"):
            raise LinkedInApiError(
                f"destination '{self.name}': conversion rule {rule} takes conversions by "
                f"{body['conversionMethod']}, not the Conversions API. Fix: create a rule with "
                "conversion method CONVERSIONS_API and sync to it"
            )
        named = f" ('{body['name']}')" if body.get("name") else ""
        return f"LinkedIn access token accepted; conversion rule {rule}{named} readable"

    def _event(self, batch: Batch, record: Record, notes: list[str]) -> dict[str, Any]:
        f = record.fields
        ids = normalize.user_ids(f, ID_FIELDS, notes)
        info = normalize.details(f, INFO_FIELDS, notes)
        if not ids and not ("firstName" in info and "lastName" in info):
            raise InvalidValue(
                "; ".join(
                    [
                        "no user id: LinkedIn needs an email, li_fat_id, acxiom_id or "
                        "oracle_moat_id (or a first and last name) to attribute a conversion",
                        *notes,
                    ]
                )
            )
        event: dict[str, Any] = {
            "conversion": rule_urn(batch.object or ""),
            "conversionHappenedAt": epoch_ms(f.get(TIME_FIELD), batch.run_time),
            # A mapped event_id (the one the Insight Tag sent) lets LinkedIn drop the duplicate.
            "eventId": str(f.get("event_id") or event_id(batch.sync, record.key)),
            "user": {"userIds": ids, **({"userInfo": info} if info else {})},
        }
        if f.get("value") is not None and f.get("value") != "":
            currency = normalize.plain(f.get("currency")) or self.config.currency_code
            if not currency:
                raise InvalidValue(
                    "value has no currency: map currency or set currency_code on the destination"
                )
            event["conversionValue"] = {
                "currencyCode": currency.upper(),
                "amount": amount(f["value"]),
            }
        return event

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        built = build_items(
            batch.records, out, lambda r, notes: self._event(batch, r, notes), InvalidValue
        )
        events = [(record.key, event) for record, event in built]

        def settle(key: str, reason: str | None) -> None:
            if reason is not None:
                out.rejected[key] = reason

        self.api.batch_create(
            "/conversionEvents", events, settle, self._missing, self.request_budget()
        )
        # Every event sent carries a user id or a name, or it was not sent.
        out.identified = sum(1 for key, _ in events if key not in out.rejected)
        return out

    def close(self) -> None:
        self.api.close()
