"""LinkedIn Matched Audiences: the members of a DMP segment (`object:` its URN,
`urn:li:dmpSegment:<id>`, or its id), streamed through `POST /dmpSegments/{id}/users`
(BATCH_CREATE, at most 5,000 elements a request). An upserted row is an `ADD` of its user ids
(`SHA256_EMAIL`, `GOOGLE_AID`) with the member's first and last name, title, company and
country; a row that leaves the model (`delete_behavior: delete`) is a `REMOVE` of the ids it was
added with, kept as its destination id. A row whose email changed removes the old one. LinkedIn
answers each element with its own status, so a refused one (e.g. an email that is no SHA-256
digest) rejects its row alone.

LinkedIn matches members asynchronously and reports a segment's size (after 300 matched members,
over a rolling window), not a match rate of a request: runs count identified rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.impl.linkedin import normalize
from retl_dagster.destinations.impl.linkedin.api import LinkedInApi, describe
from retl_dagster.destinations.impl.linkedin.config import MAX_ELEMENTS, LinkedInAudienceConfig
from retl_dagster.destinations.impl.linkedin.exceptions import LinkedInApiError

ID_FIELDS = {"email": "SHA256_EMAIL", "google_aid": "GOOGLE_AID"}
"""Mappable identifiers -> LinkedIn's idType (emails are normalised and hashed here)."""
DETAIL_FIELDS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "title": "title",
    "company": "company",
    "country": "country",
}
"""Mappable member details -> the element's key (sent in clear text, as LinkedIn takes them)."""
FIELDS = (*ID_FIELDS, *DETAIL_FIELDS)
SEGMENT_URN = "urn:li:dmpSegment:"
ALIASES = {
    "firstName": "first_name",
    "lastName": "last_name",
    "email_sha256": "email",
    "sha256_email": "email",
    "gaid": "google_aid",
    "google_advertising_id": "google_aid",
    "country_code": "country",
    "countryCode": "country",
    "company_name": "company",
    "companyName": "company",
    "job_title": "title",
}
"""Field names people reach for, and the one this destination takes instead."""


def unknown_fields(
    type_: str, sync: SyncShape, allowed: tuple[str, ...], aliases: dict[str, str]
) -> list[Problem]:
    """A problem for each mapped field `type_` does not take, naming the one meant where the
    name is a known alias."""
    problems: list[Problem] = []
    for i, f in enumerate(sync.fields, start=1):
        if f in allowed:
            continue
        meant = aliases.get(f)
        hint = f"map it to {meant}" if meant in allowed else f"use one of {', '.join(allowed)}"
        problems.append((f"mappings[{i}].to", f"{type_} takes no field '{f}'", hint))
    return problems


def segment_id(object_: str) -> str:
    """The DMP segment's id from the sync's object: the id, or its URN."""
    return str(object_).removeprefix(SEGMENT_URN)


class LinkedInAudienceDestination(Destination[LinkedInAudienceConfig]):
    type: ClassVar[str] = "linkedin_audience"
    config_class = LinkedInAudienceConfig
    modes = frozenset({"upsert", "mirror"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_ELEMENTS
    requires_object = True
    reports_match = True

    def __init__(self, name: str, config: LinkedInAudienceConfig) -> None:
        super().__init__(name, config)
        self.api = LinkedInApi(name, config, "rw_dmp_segments")
        self.client = self.api.client  # `retl test-row` shows its exchanges

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.object and not segment_id(sync.object).isdigit():
            problems.append(
                (
                    "object",
                    f"'{sync.object}' is not a DMP segment",
                    f"set object to the segment's URN, {SEGMENT_URN}<id> (or its numeric id), "
                    "as LinkedIn answered when the segment was created",
                )
            )
        problems += unknown_fields(cls.type, sync, FIELDS, ALIASES)
        if not set(ID_FIELDS) & set(sync.fields):
            problems.append(
                (
                    "mappings",
                    "LinkedIn matches members by a user id",
                    "map a column to email (normalised and SHA-256 hashed here) or google_aid",
                )
            )
        return problems

    def _missing(self, segment: str) -> Callable[[httpx.Response], Exception]:
        def error(response: httpx.Response) -> Exception:
            return LinkedInApiError(
                f"destination '{self.name}': LinkedIn has no DMP segment {segment} the token can "
                f"reach ({describe(response)}). Fix: set the sync's object to the segment's id, "
                "and make sure the token's member has access to its ad account"
            )

        return error

    def check(self, object_: str | None = None) -> str:
        """`GET /dmpSegments/{id}`: the token is accepted and reaches the segment (without an
        object: nothing to read, so the token is only checked by the first sync)."""
        if not object_:
            return "LinkedIn access token set (name a sync's segment to read it)"
        segment = segment_id(object_)
        response = self.api.get(f"/dmpSegments/{segment}")
        if not response.is_success:
            raise self._missing(segment)(response)
        body = response.json()
        name = body.get("name") if isinstance(body, dict) else None
        named = f" ('{name}')" if name else ""
        return f"LinkedIn access token accepted; DMP segment {segment}{named} readable"

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult(identified=0)
        removes: list[tuple[Record, list[normalize.UserId]]] = []
        adds: list[tuple[Record, list[normalize.UserId], dict[str, str]]] = []
        for record in batch.records:
            previous = normalize.loads(record.dest_id)
            if record.op == "removed":
                if previous:
                    removes.append((record, previous))
                else:
                    out.rejected[record.key] = (
                        "the user ids this member was added with are unknown (no destination id "
                        "in state), so it cannot be removed from the segment"
                    )
                continue
            notes: list[str] = []
            ids = normalize.user_ids(record.fields, ID_FIELDS, notes)
            if not ids:
                out.rejected[record.key] = "; ".join(
                    [
                        "no user id: LinkedIn needs an email or a google_aid to match a member",
                        *notes,
                    ]
                )
                continue
            details = normalize.details(record.fields, DETAIL_FIELDS, notes)
            if notes:
                out.warnings[record.key] = "; ".join(notes)
            now = {normalize.canonical(i) for i in ids}
            stale = [i for i in previous if normalize.canonical(i) not in now]
            if stale:  # an email that changed: the old one leaves the segment
                removes.append((record, stale))
            adds.append((record, ids, details))
        # LinkedIn does not promise the order it applies a request's elements in: an id this
        # batch adds is never also removed by it.
        adding = {normalize.canonical(i) for _, ids, _ in adds for i in ids}
        elements: list[tuple[str, dict[str, Any]]] = []
        for record, ids in removes:
            kept = [i for i in ids if normalize.canonical(i) not in adding]
            if kept:
                elements.append((record.key, {"action": "REMOVE", "userIds": kept}))
        for record, ids, details in adds:
            elements.append((record.key, {"action": "ADD", "userIds": ids, **details}))

        def settle(key: str, reason: str | None) -> None:
            if reason is not None:
                out.rejected[key] = "; ".join(filter(None, [out.rejected.get(key), reason]))

        segment = segment_id(batch.object or "")
        self.api.batch_create(
            f"/dmpSegments/{segment}/users",
            elements,
            settle,
            self._missing(segment),
            self.request_budget(),
        )
        for record, ids, _ in adds:
            if record.key not in out.rejected:
                out.dest_ids[record.key] = normalize.dumps(ids)
                out.identified = (out.identified or 0) + 1
        return out

    def close(self) -> None:
        self.api.close()
