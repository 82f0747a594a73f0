"""Meta Custom Audiences from a customer list: the sync's `object` is the audience's id (or
`audience:<id>`), and its rows are the audience's customers.

- Additions: `POST /{version}/{audience_id}/users`; removals: `DELETE` of the same edge. The body
  is what Meta's Business SDK builds (`CustomAudience.format_params`): `payload` with the
  multi-key `schema` (EMAIL, PHONE, FN, LN, ZIP, CT, ST, COUNTRY, DOBY, DOBM, DOBD, GEN, FI,
  MADID, EXTERN_ID), `is_raw: true` and `data` (one list of values a customer, in the schema's
  order, "" where a key is unknown), every value normalised and SHA-256 hashed as Meta asks
  (normalize.py; EXTERN_ID and MADID go unhashed), plus `access_token`.
- A request carries at most 10,000 customers. A batch goes as one upload session: the same
  `session_id` on each of its requests, `batch_seq` 1, 2, 3..., `last_batch_flag` on the last
  and `estimated_num_total`. A request that fails ends its session: the rest of the batch goes in
  a new one, so a request whose fate is unknown never shares a sequence number with another.
- Meta's answer says `num_received` and `num_invalid_entries`, with `invalid_entry_samples`:
  customers the samples name are rejected with Meta's reason; a request Meta did not confirm in
  full is rejected whole (sent again on the next run; adding a customer twice is harmless).
- Mirror: a removed row is deleted with the values it was last added with (kept as its
  destination id); a changed email, phone, MADID or EXTERN_ID is deleted too, unless this batch
  adds the same value for someone.
- Graph throttling (codes 4, 17, 32, 613, 80003 custom audiences, 80004 ads management; HTTP
  429) backs off, waiting as long as `X-Business-Use-Case-Usage` says; 190 (token) and an
  audience Meta will not update (missing, no permission, flagged) fail the run.
- Match rate: Meta reports one per upload session (`GET /{audience_id}/sessions`:
  `num_matched` of `num_received`), and the audience's approximate size (`approximate_count_
  lower_bound` / `_upper_bound`); the run's match rate is its sessions' once Meta has matched them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from retl_dagster.destinations.base import (
    NESTED_KINDS,
    Batch,
    BatchResult,
    Destination,
    DestinationError,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.http import HttpClient, error_object, retry_after_header
from retl_dagster.destinations.impl.facebook import normalize
from retl_dagster.destinations.impl.facebook.audience_config import (
    MAX_RECORDS,
    FacebookAudienceConfig,
)
from retl_dagster.destinations.impl.facebook.client import THROTTLING_CODES, error_message
from retl_dagster.destinations.impl.facebook.exceptions import (
    FacebookAudienceError,
    FacebookAuthError,
)

AUDIENCE_THROTTLING_CODES = THROTTLING_CODES | {80003}
"""The Graph API's rate limits, and the Custom Audience business use case's (80003)."""
TRANSIENT_CODES = frozenset({1, 2})
"""Graph "unknown error" and "service temporarily unavailable": worth another attempt."""
PERMISSION_CODES = frozenset({10, 294})
"""Permission denied; managing ads needs `ads_management` (200-299 are permission errors too)."""
AUDIENCE_REFUSED_CODES = frozenset({2650})
"""Failed to update the custom audience (e.g. it was created from another kind of data)."""
AUDIENCE_BLOCKED_SUBCODES = frozenset({33, 1713230})
"""The object does not exist or cannot be reached; the audience is flagged (operation_status
471) and refuses membership changes until its restrictions are resolved."""
MAX_SESSION_READS = 50
"""Upload sessions read back for the match rate (a run's last ones, where it has more)."""
ALIASES = {
    "em": "email",
    "email_address": "email",
    "ph": "phone",
    "phone_number": "phone",
    "first_name": "fn",
    "last_name": "ln",
    "first_initial": "fi",
    "city": "ct",
    "state": "st",
    "zp": "zip",
    "zip_code": "zip",
    "postal_code": "zip",
    "country_code": "country",
    "ge": "gen",
    "gender": "gen",
    "db": "dob",
    "date_of_birth": "dob",
    "birthday": "dob",
    "birth_year": "doby",
    "external_id": "extern_id",
    "mobile_advertiser_id": "madid",
    "idfa": "madid",
    "aaid": "madid",
}
"""Names people reach for, and Meta's customer list key instead."""
AUDIENCE_PREFIX = "audience:"
IDENTIFYING_FIELDS = frozenset({"email", "phone", "madid", "extern_id"})
NAME_COMPANION_FIELDS = frozenset({"zip", "ct", "st", "country", "doby", "dob"})

Entry = dict[str, str]
"""One customer's values by schema key (EMAIL -> its hash...), as sent."""


def audience_id(object_: str | None) -> str:
    """The custom audience's id from the sync's object: the id, or `audience:<id>` (YAML reads
    a bare all-digit id as a number; the prefix keeps it text)."""
    return str(object_ or "").strip().removeprefix(AUDIENCE_PREFIX).strip()


def is_transient(response: httpx.Response) -> bool:
    """429, 5xx, Graph throttling codes (sent with a 400) and errors Meta marks transient."""
    if response.status_code == 429 or response.status_code >= 500:
        return True
    if response.is_success:
        return False
    err = error_object(response)
    code = err.get("code")
    return (
        code in AUDIENCE_THROTTLING_CODES
        or code in TRANSIENT_CODES
        or err.get("is_transient") is True
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds to wait: the longest `estimated_time_to_regain_access` (minutes) of Meta's
    `X-Business-Use-Case-Usage` header, else `Retry-After`; None to back off exponentially."""
    minutes = 0.0
    try:
        usage = json.loads(response.headers.get("X-Business-Use-Case-Usage") or "{}")
    except ValueError:
        usage = {}
    for entries in usage.values() if isinstance(usage, dict) else []:
        for entry in entries if isinstance(entries, list) else []:
            try:
                minutes = max(minutes, float(entry.get("estimated_time_to_regain_access") or 0))
            except (AttributeError, TypeError, ValueError):
                continue
    if minutes > 0:
        return minutes * 60
    return retry_after_header(response)


def _entry(value: str | None) -> Entry:
    """The entry a record was last added with, from its destination id ({} when unknown)."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        k: v for k, v in parsed.items() if k in normalize.LIST_KEYS and isinstance(v, str) and v
    }


def _chunks(items: list[tuple[Record, Entry]], size: int) -> Iterator[list[tuple[Record, Entry]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _Session:
    """An upload session: its id, the next `batch_seq`, and the customers it is to carry."""

    session_id: int
    total: int
    seq: int = 1

    @classmethod
    def new(cls, total: int) -> _Session:
        # Chosen by the advertiser, unique within the ad account: 63 random bits.
        return cls(secrets.randbelow(2**63 - 1) + 1, total)


class FacebookAudienceDestination(Destination[FacebookAudienceConfig]):
    type: ClassVar[str] = "facebook_audience"
    config_class = FacebookAudienceConfig
    modes = frozenset({"insert", "upsert", "mirror"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_RECORDS
    requires_object = True
    reports_match = True

    def __init__(self, name: str, config: FacebookAudienceConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            base_url=str(config.base_url).rstrip("/"),
            is_transient=is_transient,
            wait_hint=wait_hint,
        )
        self.version = config.api_version
        self.audience: str | None = None
        self.added_sessions: dict[int, int] = {}
        """session_id -> customers Meta received in it, of this run's addition sessions."""

    # -- declarations -------------------------------------------------------------------------
    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.object and not audience_id(sync.object).isdigit():
            problems.append(
                (
                    "object",
                    f"'{sync.object}' is not a custom audience id",
                    "set object to the audience's numeric id, as `audience:<id>` (Ads Manager > "
                    "Audiences, the audience's ID)",
                )
            )
        listing = ", ".join(normalize.LIST_FIELDS)
        for i, f in enumerate(sync.fields, start=1):
            if f in ALIASES:
                problems.append(
                    (
                        f"mappings[{i}].to",
                        f"Meta's customer list key for {f} is {ALIASES[f]}",
                        f"map it to {ALIASES[f]} (it is then normalised and hashed)",
                    )
                )
            elif f not in normalize.LIST_FIELDS:
                problems.append(
                    (
                        f"mappings[{i}].to",
                        f"'{f}' is not a key of Meta's customer lists",
                        f"use one of {listing}",
                    )
                )
            elif sync.kind(i - 1) in NESTED_KINDS:
                problems.append(
                    (
                        f"mappings[{i}]",
                        f"a customer list takes one value per key, not an object or array ({f})",
                        f"map one column to {f} with `from:`",
                    )
                )
        fields = set(sync.fields)
        names = {"fn", "ln"} <= fields and bool(fields & NAME_COMPANION_FIELDS)
        if not (fields & IDENTIFYING_FIELDS or names):
            problems.append(
                (
                    "mappings",
                    "Meta needs a customer identifier",
                    "map email, phone, madid or extern_id, or fn + ln with zip, ct, st, country, "
                    "doby or dob",
                )
            )
        return problems

    # -- requests -----------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        """`access_token`, and `appsecret_proof` where the app requires it (as the SDK sends)."""
        token = self.config.access_token.get_secret_value()
        params = {"access_token": token}
        if self.config.app_secret is not None:
            secret = self.config.app_secret.get_secret_value().encode()
            params["appsecret_proof"] = hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()
        return params

    def _fail_if_unusable(
        self, err: dict[str, Any], response: httpx.Response, audience: str
    ) -> None:
        """Raise when no request to this audience can succeed: a refused token, missing
        permission, an audience that does not exist, is flagged or refuses this kind of upload."""
        code, subcode = err.get("code"), err.get("error_subcode")
        if (
            code == 190
            or response.status_code == 401
            or "appsecret_proof" in str(err.get("message"))
        ):
            raise FacebookAuthError(
                f"destination '{self.name}': Meta refused the access token: "
                f"{error_message(err, response)}. Fix: generate a new system-user token with "
                "ads_management on the audience's ad account (and set app_secret where the app "
                "requires appsecret_proof)"
            )
        if (
            code in PERMISSION_CODES
            or (isinstance(code, int) and 200 <= code < 300)
            or response.status_code == 403
        ):
            raise FacebookAudienceError(
                f"destination '{self.name}': the token may not change custom audience "
                f"{audience}: {error_message(err, response)}. Fix: give the system user "
                "ads_management and access to the audience's ad account (Business settings > "
                "Users > System users > Assign assets)"
            )
        if subcode in AUDIENCE_BLOCKED_SUBCODES or code in AUDIENCE_REFUSED_CODES:
            raise FacebookAudienceError(
                f"destination '{self.name}': custom audience {audience} cannot take members: "
                f"{error_message(err, response)}. Fix: check the sync's object is the id of a "
                "customer list audience the token's ad account owns, and resolve any "
                "restriction Meta shows on it in Audiences"
            )

    def deliver(self, batch: Batch) -> BatchResult:
        audience = audience_id(batch.object)
        self.audience = audience
        out = BatchResult(identified=0)
        adds: list[tuple[Record, Entry]] = []
        removes: list[tuple[Record, Entry]] = []
        unchanged: list[Record] = []
        for record in batch.records:
            previous = _entry(record.dest_id)
            if record.op == "removed":
                if previous:
                    removes.append((record, previous))
                else:
                    out.rejected[record.key] = (
                        "the values this customer was added with are unknown (no destination "
                        "id in state), so it cannot be removed from the audience"
                    )
                continue
            notes: list[str] = []
            entry = normalize.customer_list_entry(
                record.fields, self.config.default_phone_country_code, notes
            )
            if not normalize.list_identifies(entry):
                out.rejected[record.key] = "; ".join(
                    [
                        "no customer identifier: Meta needs an email, a phone number, a mobile "
                        "advertising id, an extern_id, or a first and last name with a zip, "
                        "city, state, country or year of birth",
                        *notes,
                    ]
                )
                continue
            if notes:
                out.warnings[record.key] = "; ".join(notes)
            if entry == previous:
                unchanged.append(record)  # already in the audience as it is
                continue
            stale = {
                k: v
                for k, v in previous.items()
                if k in normalize.STANDALONE_LIST_KEYS and entry.get(k) != v
            }
            if stale:  # an email or phone that changed: the old one leaves the audience
                removes.append((record, stale))
            adds.append((record, entry))
        # Meta does not promise to apply a batch's removals before its additions: an email,
        # phone, MADID or extern id this batch adds (for anyone) is never also removed by it.
        adding = {
            (k, v) for _, e in adds for k, v in e.items() if k in normalize.STANDALONE_LIST_KEYS
        }
        kept: list[tuple[Record, Entry]] = []
        for record, entry in removes:
            rest = {k: v for k, v in entry.items() if (k, v) not in adding}
            if normalize.list_identifies(rest):
                kept.append((record, rest))
        self._upload("DELETE", audience, kept, out)
        self._upload("POST", audience, adds, out)
        for record, entry in adds:
            if record.key not in out.rejected:
                out.dest_ids[record.key] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        out.identified = sum(1 for r, _ in adds if r.key not in out.rejected) + sum(
            1 for r in unchanged if r.key not in out.rejected
        )
        return out

    def _upload(
        self, method: str, audience: str, items: list[tuple[Record, Entry]], out: BatchResult
    ) -> None:
        """One upload session of `items` (a new one after a request that failed)."""
        items = [(r, e) for r, e in items if r.key not in out.rejected]
        if not items:
            return
        schema = [k for k in normalize.LIST_KEYS if any(k in e for _, e in items)]
        session = _Session.new(len(items))
        sent = 0
        for chunk in _chunks(items, self.config.rows_per_request):
            last = sent + len(chunk) == len(items)
            received = self._request(method, audience, schema, chunk, session, last, out)
            sent += len(chunk)
            if received is None:
                session = _Session.new(len(items) - sent)
                continue
            if method == "POST":
                sid = session.session_id
                self.added_sessions[sid] = self.added_sessions.get(sid, 0) + received
            session.seq += 1

    def _request(
        self,
        method: str,
        audience: str,
        schema: list[str],
        chunk: list[tuple[Record, Entry]],
        session: _Session,
        last: bool,
        out: BatchResult,
    ) -> int | None:
        """One request of a session. Returns how many customers Meta received, or None when it
        refused the request or did not confirm it (its customers are then rejected)."""
        body: dict[str, Any] = {
            "payload": {
                "schema": schema,
                "is_raw": True,
                "data": [[entry.get(k, "") for k in schema] for _, entry in chunk],
            },
            "session": {
                "session_id": session.session_id,
                "batch_seq": session.seq,
                "last_batch_flag": last,
                "estimated_num_total": session.total,
            },
            **self._auth(),
        }
        response = self.client.request(method, f"/{self.version}/{audience}/users", json=body)
        if not response.is_success:
            err = error_object(response)
            self._fail_if_unusable(err, response, audience)
            reason = f"Meta refused the request: {error_message(err, response)}"
            for record, _ in chunk:
                out.rejected[record.key] = reason
            return None
        try:
            answer = response.json()
            received = int(answer["num_received"])
            invalid = int(answer.get("num_invalid_entries") or 0)
            samples = answer.get("invalid_entry_samples") or {}
        except (ValueError, TypeError, KeyError, AttributeError):
            reason = (
                f"Meta's answer did not confirm the request (HTTP {response.status_code}: "
                f"{response.text[:200]}); it is sent again on the next run"
            )
            for record, _ in chunk:
                out.rejected[record.key] = reason
            return None
        if received != len(chunk):
            reason = (
                f"Meta received {received} of the request's {len(chunk)} customers without "
                "saying which; all of them are sent again on the next run"
            )
            for record, _ in chunk:
                out.rejected[record.key] = reason
            return received
        if invalid:
            self._invalid(chunk, invalid, samples if isinstance(samples, dict) else {}, out)
        return received

    @staticmethod
    def _invalid(
        chunk: list[tuple[Record, Entry]], invalid: int, samples: dict[str, Any], out: BatchResult
    ) -> None:
        """Reject the customers Meta's `invalid_entry_samples` name (a sample is one of the
        entry's values); where Meta counted more than it named, say so on the others."""
        where: dict[str, list[Record]] = {}
        for record, entry in chunk:
            for value in entry.values():
                where.setdefault(value, []).append(record)
        named: set[str] = set()
        for sample, why in samples.items():
            records = where.get(str(sample))
            if records is None:  # a sample that quotes the entry rather than being a value
                records = [
                    r
                    for r, e in chunk
                    if any(len(v) >= 32 and v in str(sample) for v in e.values())
                ]
            for record in records:
                named.add(record.key)
                out.rejected[record.key] = f"Meta counted this customer invalid: {why}"
        unnamed = invalid - len(named)
        if unnamed > 0:
            note = (
                f"Meta counted {invalid} of the request's {len(chunk)} customers invalid "
                f"and named {len(named)}; this one may be among the other {unnamed}"
            )
            for record, _ in chunk:
                if record.key not in named:
                    out.warnings[record.key] = "; ".join(
                        filter(None, [out.warnings.get(record.key), note])
                    )

    # -- reads --------------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        return self.client.request(
            "GET", f"/{self.version}/{path}", params={**params, **self._auth()}
        )

    def audience_size(self, audience: str | None = None) -> tuple[int, int] | None:
        """Meta's approximate count of the people in the audience (lower, upper bound), or None
        where it reports none (an audience too small or still being processed)."""
        target = audience_id(audience) or self.audience
        if not target:
            return None
        try:
            response = self._get(
                target, {"fields": "approximate_count_lower_bound,approximate_count_upper_bound"}
            )
            body = response.json() if response.is_success else {}
            low = int(body["approximate_count_lower_bound"])
            high = int(body["approximate_count_upper_bound"])
        except (DestinationError, ValueError, TypeError, KeyError, AttributeError):
            return None
        return (low, high) if low >= 0 and high >= 0 else None

    def check(self, object_: str | None = None) -> str:
        """`GET /{version}/{audience_id}` (or `/me` without an audience): the token is accepted
        and reaches a customer list audience. Sends no member."""
        if not object_:
            response = self._get("me", {"fields": "id,name"})
            if not response.is_success:
                err = error_object(response)
                self._fail_if_unusable(err, response, "-")
                raise FacebookAuthError(
                    f"destination '{self.name}': Meta refused the access token: "
                    f"{error_message(err, response)}. Fix: generate a new system-user token"
                )
            return "Meta access token accepted"
        object_ = audience_id(object_)
        fields = "id,name,subtype,approximate_count_lower_bound,approximate_count_upper_bound"
        response = self._get(object_, {"fields": fields})
        if not response.is_success:
            err = error_object(response)
            self._fail_if_unusable(err, response, object_)
            raise FacebookAudienceError(
                f"destination '{self.name}': custom audience {object_} cannot be read: "
                f"{error_message(err, response)}. Fix: check the sync's object"
            )
        body = response.json()
        subtype = body.get("subtype")
        if subtype not in (None, "CUSTOM"):
            raise FacebookAudienceError(
                f"destination '{self.name}': audience {object_} is a {subtype} audience, not a "
                "customer list. Fix: set the sync's object to a customer list audience (Create "
                "audience > Custom audience > Customer list)"
            )
        said = f"Meta access token accepted; custom audience {object_}"
        if body.get("name"):
            said += f" ('{body['name']}')"
        said += " readable"
        low, high = (
            body.get("approximate_count_lower_bound"),
            body.get("approximate_count_upper_bound"),
        )
        if isinstance(low, int) and isinstance(high, int) and low >= 0:
            said += f"; about {low:,}-{high:,} people"
        return said

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        self.audience = audience_id(object_) or None
        self.added_sessions = {}  # a new run's sessions

    def match_rate(self) -> float | None:
        """Of the customers this run added, the share Meta matched to people: `num_matched` of
        `num_received` (less `num_invalid_entries`) over the run's upload sessions, as
        `GET /{audience_id}/sessions` reports them. None until Meta has matched every one of them
        (matching takes minutes to hours), or when the run added no one."""
        if not self.audience or not self.added_sessions:
            return None
        matched = received = 0
        for session_id in list(self.added_sessions)[-MAX_SESSION_READS:]:
            try:
                response = self._get(
                    f"{self.audience}/sessions",
                    {
                        "session_id": session_id,
                        "fields": "session_id,num_received,num_matched,num_invalid_entries,stage",
                    },
                )
                rows = response.json().get("data") if response.is_success else None
                row = next(r for r in rows or [] if str(r.get("session_id")) == str(session_id))
                if row.get("num_matched") in (None, ""):
                    return None  # not matched yet
                matched += int(row["num_matched"])
                received += int(row["num_received"]) - int(row.get("num_invalid_entries") or 0)
            except (
                DestinationError,
                StopIteration,
                ValueError,
                TypeError,
                KeyError,
                AttributeError,
            ):
                # Everything is delivered by now; a missing rate must not fail the run.
                return None
        return min(1.0, matched / received) if received > 0 else None

    def close(self) -> None:
        self.client.close()
