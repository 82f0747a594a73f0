"""Iterable's bulk API (`Api-Key` header; `https://api.iterable.com`, EU
`https://api.eu.iterable.com`).

Sources, as no Iterable API reference page was in reach: Iterable's own TypeScript API client
(github.com/Iterable/api-client: src/types/users.ts, events.ts, lists.ts, errors.ts), block's Go
client (github.com/block/iterable-go: types/shared.go, batch/user_update.go), RudderStack's
Iterable destination (rudderlabs/rudder-transformer, src/v0/destinations/iterable/config.js) and
the rate limits Iterable's OpenAPI descriptions state (api.iterable.com/api/docs, as reproduced in
the clients generated from it: "Rate limit: 5 requests/second, per project" for
users/bulkUpdate, 10 for the bulk event track, 100 for GET /api/lists).

Objects:
- `users` (mode upsert): `POST /api/users/bulkUpdate` `{"users": [{email|userId, dataFields}]}`
  (users.ts BulkUpdateUsersParamsSchema); Iterable merges the data fields into the profile.
- `list:<listId>` (mode upsert): `POST /api/lists/subscribe` `{"listId", "subscribers":
  [{email|userId, dataFields}]}`; `delete_behavior: delete` sends a removed row to
  `POST /api/lists/unsubscribe` `{"listId", "subscribers": [{email|userId}]}` (lists.ts).
- any other object (mode events): the event's name; `POST /api/events/trackBulk` `{"events":
  [{eventName, email|userId, id, createdAt, dataFields}]}` (events.ts BulkEventSchema): `createdAt`
  is Unix seconds from the mapped `createdAt` (else the run's start), `id` (at most 512
  characters) a hash of the row, so a resend updates the same event instead of adding one.

Answers: `{successCount, failCount, failedUpdates: {invalidEmails, invalidUserIds, notFoundEmails,
conflictEmails, forgottenEmails, invalidDataEmails, failedEmails, ... (and the *UserIds twins)}}`
(types/shared.go, lists.ts FailedUserUpdatesSchema; the deprecated top-level `invalidEmails` /
`invalidUserIds` too): exactly the rows with a named identifier are rejected with the reason.
A 400 refuses the request whole (e.g. a field type mismatch, iterable-go batch/user_update.go):
it is halved until the refused rows are alone. Errors are `{msg, code, params}` (errors.ts); 401
(`BadApiKey`) / 403 fail the run; 429 backs off (Iterable sends no wait hint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.iterable.config import (
    MAX_CONCURRENCY,
    MAX_RECORDS,
    IterableConfig,
)
from retl_dagster.destinations.impl.iterable.exceptions import IterableAuthError, IterableError

USERS = "users"
LIST_PREFIX = "list:"
IDENTIFIERS = ("email", "userId")
"""How Iterable identifies a user in every bulk body (users.ts, events.ts, lists.ts)."""
BULK_UPDATE = "/api/users/bulkUpdate"
TRACK_BULK = "/api/events/trackBulk"
SUBSCRIBE = "/api/lists/subscribe"
UNSUBSCRIBE = "/api/lists/unsubscribe"
LISTS = "/api/lists"
API_WINDOW = Rate(5, Duration.SECOND)
"""users/bulkUpdate's documented limit, 5 requests a second per project, the lowest of the
endpoints used (trackBulk: 10): the destination's one shared budget."""
MAX_EVENT_ID = 512
"""events.ts: an event `id` is 1 to 512 characters."""
FAILURES = {
    "invalidEmails": "the email is not a valid address",
    "invalidUserIds": "the userId is not valid",
    "notFoundEmails": "no user with this email exists",
    "notFoundUserIds": "no user with this userId exists",
    "conflictEmails": "the email belongs to another user (email / userId conflict)",
    "conflictUserIds": "the userId belongs to another user (email / userId conflict)",
    "forgottenEmails": "the user was forgotten (a privacy request); Iterable keeps no data on them",
    "forgottenUserIds": "the user was forgotten (a privacy request); Iterable keeps no data on "
    "them",
    "invalidDataEmails": "a data field's value does not fit the project's field type",
    "invalidDataUserIds": "a data field's value does not fit the project's field type",
    "failedEmails": "Iterable failed to update the user",
    "failedUserIds": "Iterable failed to update the user",
}
"""`failedUpdates` keys (block/iterable-go types/shared.go; Iterable/api-client lists.ts) ->
what a person reads."""

Item = tuple[Record, dict[str, Any]]


def list_id(object_: str | None) -> int | None:
    """The list id of a `list:<id>` object, None when it is not one."""
    text = (object_ or "")[len(LIST_PREFIX) :] if (object_ or "").startswith(LIST_PREFIX) else ""
    return int(text) if text.isdigit() else None


def event_id(sync: str, record: Record) -> str:
    """A hash of the row: the same row always gets the same id, so Iterable updates the event a
    resend (after a retry or a crash) carries instead of adding a second one."""
    raw = json.dumps([sync, record.key, record.fields], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _message(response: httpx.Response) -> str:
    """An error answer's `{msg, code}` (Iterable/api-client src/errors.ts) as one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("msg"):
        return f"Iterable: {body['msg']} ({body.get('code') or response.status_code})"
    return error_text(response)


def _norm(field: str, value: Any) -> str:
    text = str(value).strip()
    return text.lower() if field == "email" else text


def failures(body: dict[str, Any], field: str) -> dict[str, str]:
    """The answer's named failures for identifier `field`: normalised identifier -> reason."""
    suffix = "Emails" if field == "email" else "UserIds"
    named: dict[str, str] = {}
    failed = body.get("failedUpdates")
    lists: list[tuple[str, Any]] = list(failed.items()) if isinstance(failed, dict) else []
    # The deprecated top-level lists (still sent, lists.ts UserBulkUpdateListResponseSchema).
    lists += [(k, body[k]) for k in ("invalidEmails", "invalidUserIds") if k in body]
    for key, values in lists:
        if not key.endswith(suffix) or not isinstance(values, list):
            continue
        reason = FAILURES.get(key, key)
        for value in values:
            named.setdefault(_norm(field, value), f"Iterable: {reason} ({key})")
    return named


class IterableDestination(Destination[IterableConfig]):
    type: ClassVar[str] = "iterable"
    config_class = IterableConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "events"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_RECORDS
    requires_object = True
    requires_match = frozenset({"upsert", "events"})
    event_time_field = "createdAt"

    def __init__(self, name: str, config: IterableConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            refused=lambda response: IterableAuthError(
                f"destination '{name}': Iterable refused the API key "
                f"({error_text(response)}). Fix: use a server-side API key of the project "
                "(Integrations > API Keys), and region: eu for a project in the EU data centre"
            ),
            base_url=config.api_url,
            headers={"Api-Key": config.api_key.get_secret_value()},
            api_window=API_WINDOW,
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        object_ = sync.object or ""
        is_list = object_.startswith(LIST_PREFIX)
        if sync.match_field is not None and sync.match_field not in IDENTIFIERS:
            problems.append(
                (
                    "match.field",
                    f"Iterable identifies users by {' or '.join(IDENTIFIERS)}",
                    "match on email or userId (whichever the project identifies users by)",
                )
            )
        if is_list and list_id(object_) is None:
            problems.append(
                ("object", "no numeric list id after 'list:'", "use object: list:<list id>")
            )
        if sync.mode == "upsert" and object_ != USERS and not is_list:
            problems.append(
                (
                    "object",
                    f"mode upsert writes users, and '{object_}' is not 'users' or 'list:<id>'",
                    "use object: users or list:<list id>, or mode: events with the event's name",
                )
            )
        if sync.mode == "events" and (object_ == USERS or is_list):
            problems.append(
                (
                    "object",
                    f"in mode events the object is the event's name, not '{object_}'",
                    "set object to the event name (e.g. plan_upgraded), or use mode upsert",
                )
            )
        if sync.delete_behavior == "delete" and not is_list:
            problems.append(
                (
                    "delete_behavior",
                    "this destination never deletes Iterable users; it removes them from a list",
                    "use object: list:<list id> to unsubscribe removed rows, or "
                    "delete_behavior: nothing",
                )
            )
        return problems

    def check(self, object_: str | None = None) -> str:
        """`GET /api/lists` (read-only): the key works, and the sync's list exists."""
        response = self.client.request("GET", LISTS)
        if not response.is_success:
            raise IterableError(
                f"destination '{self.name}': GET {LISTS} answered {error_text(response)}. "
                "Fix: check region / base_url"
            )
        lists = response.json().get("lists", [])
        wanted = list_id(object_)
        if wanted is not None and wanted not in {x.get("id") for x in lists}:
            raise IterableError(
                f"destination '{self.name}': the project has no list {wanted}. Fix: use the id "
                "in the list's URL (Audience > Lists) as object: list:<id>"
            )
        return f"Iterable accepts the API key (the project has {len(lists)} list(s))"

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        writes: list[Item] = []
        removes: list[Item] = []
        for r in batch.records:
            if r.op == "removed" and batch.mode == "events":
                continue  # events are insert-only
            try:
                item = (r, self._entry(batch, r))
            except ValueError as exc:
                out.rejected[r.key] = str(exc)
                continue
            (removes if r.op == "removed" else writes).append(item)
        budget = self.request_budget()
        for items, removing in ((writes, False), (removes, True)):
            if items:
                send_isolating(
                    items,
                    lambda part, rm=removing: self._send(batch, part, rm, out),  # type: ignore[misc]
                    lambda item, reason: out.rejected.__setitem__(item[0].key, reason),
                    budget,
                )
        return out

    def _entry(self, batch: Batch, record: Record) -> dict[str, Any]:
        """One user, event or subscriber; ValueError for a row Iterable cannot take (it alone is
        rejected)."""
        field = batch.match_field or "email"
        if record.match_value is None or str(record.match_value).strip() == "":
            raise ValueError(f"no {field} to identify the user by (the match column is empty)")
        entry: dict[str, Any] = {field: str(record.match_value)}
        if record.op == "removed":
            return entry  # lists/unsubscribe takes only the identifier
        fields = dict(record.fields)
        if field == "userId" and fields.get("email") is not None:
            entry["email"] = str(fields.pop("email"))  # the user object's own email
        if batch.mode != "events":
            entry["dataFields"] = fields
            return entry
        raw_time = fields.pop("createdAt", None)
        when = parse_event_time(raw_time) if raw_time is not None else batch.run_time
        entry.update(
            eventName=batch.object,
            id=event_id(batch.sync, record)[:MAX_EVENT_ID],
            createdAt=int(when.timestamp()),
            dataFields=fields,
        )
        return entry

    def _send(
        self, batch: Batch, chunk: Sequence[Item], removing: bool, out: BatchResult
    ) -> str | None:
        """One bulk request. Rows the answer names are rejected with its reason (a user not
        found on unsubscribe is not on the list: nothing to do). A 400 refuses the request
        whole: its `msg` goes back to send_isolating, which halves the chunk."""
        entries = [entry for _, entry in chunk]
        lid = list_id(batch.object)
        path: str
        body: dict[str, Any]
        if batch.mode == "events":
            path, body = TRACK_BULK, {"events": entries}
        elif lid is not None:
            path = UNSUBSCRIBE if removing else SUBSCRIBE
            body = {"listId": lid, "subscribers": entries}
        else:
            path, body = BULK_UPDATE, {"users": entries}
        response = self.client.request("POST", path, json=body)
        if response.status_code in (400, 413):
            return _message(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not response.is_success or not isinstance(answer, dict):
            raise IterableError(
                f"destination '{self.name}': POST {path} answered {error_text(response)}; "
                "its records are sent again by the next run"
            )
        field = batch.match_field or "email"
        if batch.mode == "events" and batch.object in (answer.get("disallowedEventNames") or []):
            disallowed = (
                f"Iterable: the project does not allow the event name '{batch.object}' "
                "(disallowedEventNames)"
            )
            out.rejected.update({r.key: disallowed for r, _ in chunk})
            return None
        named = failures(answer, field)
        refused = 0
        for r, entry in chunk:
            reason = named.get(_norm(field, entry[field]))
            if reason is None:
                continue
            refused += 1
            if removing and "(notFound" in reason:
                continue  # not a user, so not on the list: the removal holds
            out.rejected[r.key] = reason
        fail_count = answer.get("failCount")
        if isinstance(fail_count, int) and fail_count > refused:
            raise IterableError(
                f"destination '{self.name}': POST {path} counted {fail_count} failure(s) but "
                f"named only {refused}; this batch is sent again by the next run"
            )
        return None

    def close(self) -> None:
        self.client.close()
