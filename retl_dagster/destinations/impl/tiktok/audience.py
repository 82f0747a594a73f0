"""TikTok Customer File audiences (DMP): the members of an existing custom audience, kept in
step with a model. The sync's `object` is the audience's id; it maps ONE identifier, the kind
the audience was created with (`calculate_type`): `email` (EMAIL_SHA256), `phone`
(PHONE_SHA256, E.164), `idfa` (IDFA_SHA256) or `gaid` (GAID_SHA256), normalised and SHA-256
hashed here (normalize.py).

Per batch, for each action that has members:
1. `POST /dmp/custom_audience/file/upload/` (multipart: `advertiser_id`, `calculate_type`, the
   `file` of digests, one a line, and its MD5 as `file_signature`) answers a `file_path`;
2. `POST /dmp/custom_audience/update/` with `advertiser_id`, `custom_audience_id`, `action`
   (`APPEND`, or `REMOVE` for rows that left the model under `delete_behavior: delete` and for
   the old identifier of a row whose identifier changed) and `file_paths: [that path]`. The
   action is always sent: TikTok's default is REPLACE, which would drop every other member.

A record is acknowledged once TikTok accepted its file into the audience; TikTok then matches
the file in the background (24-48 hours). Each member's digest is kept as its destination id, so
a later removal knows what to remove. Before the first batch the audience is read (`GET
/dmp/custom_audience/get/`): a missing audience, or one holding another kind of identifier, fails
the run before anything is sent. TikTok reports an audience's matched size (`cover_num`, shown by
`retl check`) but no match rate, so runs show identified rows and no rate.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, ClassVar

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationError,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.impl.tiktok import normalize
from retl_dagster.destinations.impl.tiktok.client import Answer, TikTokApi
from retl_dagster.destinations.impl.tiktok.config import MAX_MEMBERS, TikTokAudienceConfig
from retl_dagster.destinations.impl.tiktok.exceptions import TikTokAudienceError

CALCULATE_TYPES = {
    "email": "EMAIL_SHA256",
    "phone": "PHONE_SHA256",
    "idfa": "IDFA_SHA256",
    "gaid": "GAID_SHA256",
}
"""The identifier a sync maps -> the audience's `calculate_type` (its files' encryption)."""
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _identifier(fields: list[str] | set[str]) -> str | None:
    found = [f for f in CALCULATE_TYPES if f in fields]
    return found[0] if len(found) == 1 else None


class TikTokAudienceDestination(Destination[TikTokAudienceConfig]):
    type: ClassVar[str] = "tiktok_audience"
    config_class = TikTokAudienceConfig
    modes = frozenset({"upsert", "mirror"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_MEMBERS
    accepts_nulls = False
    requires_object = True
    reports_match = True

    def __init__(self, name: str, config: TikTokAudienceConfig) -> None:
        super().__init__(name, config)
        self.api = TikTokApi(name, config, f"advertiser {config.advertiser_id}")
        self.identifier: str | None = None

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.object and not sync.object.isdigit():
            problems.append(
                (
                    "object",
                    f"'{sync.object}' is not a custom audience id",
                    "set object to the audience's numeric id (Audience Manager, or "
                    "/dmp/custom_audience/list/)",
                )
            )
        problems += cls.unknown_properties(sync, tuple(CALCULATE_TYPES))
        mapped = [f for f in CALCULATE_TYPES if f in sync.fields]
        if len(mapped) != 1:
            said = "none" if not mapped else " and ".join(mapped)
            problems.append(
                (
                    "mappings",
                    f"a TikTok audience holds one kind of identifier; this sync maps {said}",
                    "map exactly one of email, phone, idfa, gaid: the kind the audience was "
                    "created with",
                )
            )
        return problems

    # -- the audience -------------------------------------------------------------------------
    def _audience(self, audience_id: str) -> dict[str, Any]:
        """The audience's details as TikTok reports them; raises when it has no such one."""
        answer = self.api.get(
            "/dmp/custom_audience/get/",
            {
                "advertiser_id": self.config.advertiser_id,
                # Array parameters of a GET go as JSON, as TikTok's SDK sends them.
                "custom_audience_ids": json.dumps([audience_id]),
            },
        )
        if answer.ok:
            for item in (answer.data or {}).get("list") or []:
                details = item.get("audience_details") or {}
                if str(details.get("audience_id")) == audience_id:
                    return dict(details)
        said = "" if answer.ok else f" ({answer})"
        raise TikTokAudienceError(
            f"destination '{self.name}': advertiser {self.config.advertiser_id} has no custom "
            f"audience {audience_id}{said}. Fix: set the sync's object to the id of an existing "
            "Customer File audience (TikTok Ads Manager > Tools > Audiences)"
        )

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        self.identifier = _identifier(set(field_types))
        if not object_:
            return
        details = self._audience(object_)
        held = details.get("calculate_type")
        ours = CALCULATE_TYPES.get(self.identifier or "")
        if held and ours and held != ours:
            raise TikTokAudienceError(
                f"destination '{self.name}': audience {object_} holds {held} identifiers; "
                f"this sync sends {ours} ({self.identifier}). Fix: map the identifier the "
                "audience was created with, or sync to an audience of this kind"
            )

    def check(self, object_: str | None = None) -> str:
        """The advertiser's audience list (one of them), and the sync's audience where given:
        the token reaches the advertiser and the audience exists. Reads only."""
        answer = self.api.get(
            "/dmp/custom_audience/list/",
            {"advertiser_id": self.config.advertiser_id, "page": 1, "page_size": 1},
        )
        if not answer.ok:
            raise DestinationError(
                f"destination '{self.name}': TikTok refused to list the audiences of advertiser "
                f"{self.config.advertiser_id}: {answer}. Fix: check advertiser_id"
            )
        said = (
            f"TikTok access token accepted; advertiser {self.config.advertiser_id}'s audiences "
            "readable"
        )
        if object_:
            details = self._audience(object_)
            said += (
                f"; audience {object_} ('{details.get('name', '')}', "
                f"{details.get('calculate_type', 'unknown type')}) matched "
                f"{details.get('cover_num', 'an unknown number of')} users"
            )
        return said

    # -- members ------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult(identified=0)
        key = self.identifier or _identifier({f for r in batch.records for f in r.fields})
        if key is None:
            raise TikTokAudienceError(
                f"destination '{self.name}': the batch carries no single identifier. Fix: map "
                "exactly one of email, phone, idfa, gaid"
            )
        self.identifier = key
        appends: list[tuple[Record, str]] = []
        removes: list[tuple[Record, str]] = []
        for record in batch.records:
            previous = record.dest_id if record.dest_id and _DIGEST.match(record.dest_id) else None
            if record.op == "removed":
                if previous:
                    removes.append((record, previous))
                else:
                    out.rejected[record.key] = (
                        "the identifier this member was uploaded with is unknown (no "
                        "destination id in state), so it cannot be removed from the audience"
                    )
                continue
            try:
                digest = normalize.hashed(
                    key, record.fields.get(key), self.config.default_phone_country_code
                )
            except ValueError as exc:
                out.rejected[record.key] = f"{exc}; the audience takes {key} only"
                continue
            if digest is None:
                out.rejected[record.key] = f"no {key}: the audience takes {key} only"
                continue
            if previous and previous != digest:  # a changed identifier: the old one leaves
                removes.append((record, previous))
            appends.append((record, digest))
        # TikTok processes files in the background, in an order it does not promise: an
        # identifier this batch appends is never also removed by it.
        adding = {d for _, d in appends}
        removes = [(r, d) for r, d in removes if d not in adding]
        self._apply(batch, "REMOVE", removes, out)
        self._apply(batch, "APPEND", appends, out)
        for record, digest in appends:
            if record.key not in out.rejected:
                out.dest_ids[record.key] = digest
                out.identified = (out.identified or 0) + 1
        return out

    def _apply(
        self, batch: Batch, action: str, items: list[tuple[Record, str]], out: BatchResult
    ) -> None:
        """Upload the items' digests as one customer file and `action` it on the audience;
        what TikTok refuses rejects the items, in its words."""
        items = [(r, d) for r, d in items if r.key not in out.rejected]
        if not items:
            return
        audience = batch.object or ""
        content = "".join(f"{d}\n" for d in sorted({d for _, d in items})).encode()
        answer = self._upload(batch, action, content)
        if answer.ok:
            path = (answer.data or {}).get("file_path")
            if not path:
                answer = Answer(-1, "TikTok's upload answer carried no file_path", "", None)
            else:
                answer = self.api.post(
                    "/dmp/custom_audience/update/",
                    {
                        "advertiser_id": self.config.advertiser_id,
                        "custom_audience_id": audience,
                        "action": action,
                        "file_paths": [path],
                    },
                )
        if not answer.ok:
            verb = "adding to" if action == "APPEND" else "removing from"
            for record, _ in items:
                out.rejected[record.key] = f"{verb} audience {audience}: {answer}"

    def _upload(self, batch: Batch, action: str, content: bytes) -> Answer:
        key = self.identifier or ""
        name = f"retl-{batch.batch_id[:12]}-{action.lower()}.csv"
        return self.api.call(
            "POST",
            "/dmp/custom_audience/file/upload/",
            data={
                "advertiser_id": self.config.advertiser_id,
                "calculate_type": CALCULATE_TYPES.get(key, ""),
                # TikTok checks the file against its MD5.
                "file_signature": hashlib.md5(content, usedforsecurity=False).hexdigest(),
                "file_name": name,
            },
            files={"file": (name, content, "text/csv")},
        )

    def close(self) -> None:
        self.api.close()
